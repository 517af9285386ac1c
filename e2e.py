import socket, json, sys, os
def open_(addr):
    if isinstance(addr, tuple): s=socket.create_connection(addr)
    else: s=socket.socket(socket.AF_UNIX); s.connect(addr)
    f=s.makefile('rb'); print("greet", f.readline().strip()); return s,f
s,f=open_("/tmp/qmpprobe/f.sock")
t,tf=open_(("127.0.0.1",45871))
t.sendall(b'{"execute":"qmp_capabilities"}'); print(tf.readline())
def cmd(name, **a):
    m={"execute":name}
    if a: m["arguments"]=a
    s.sendall(json.dumps(m).encode())
    while True:
        r=json.loads(f.readline())
        if "event" in r: print("   event", r); continue
        return r
print(cmd("qmp_capabilities"))
for c in ["query-status","query-name","query-cpus-fast","stop","query-status","cont","query-status"]:
    print(c, cmd(c))
print(cmd("pmemsave", val=0, size=1<<20, filename="/tmp/qmpprobe/ram.bin"), os.path.getsize("/tmp/qmpprobe/ram.bin"))
print(cmd("pmemsave", val=16<<20, size=4096, filename="/tmp/qmpprobe/ram2.bin"))
print(cmd("quit"))
for i in range(3):
    l=f.readline(); print("after quit:", l)
    if not l: break
print("tcp client sees:", tf.read())
