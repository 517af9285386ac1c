/*
 * Command-line parsing: QEMU's option names, key=val syntax, merging and
 * the error messages.
 */
#include "qemu/osdep.h"
#include "sysemu/sysemu.h"
#include "chardev/char.h"
#include <glib/gstdio.h>

#define MiB (1ULL << 20)

/* Parse a NULL-terminated list of arguments (without argv[0]). */
static bool parse_v(VMOptions *o, GError **errp, const char *first,
                    va_list ap)
{
    g_autoptr(GPtrArray) args = g_ptr_array_new();
    const char *a;

    g_ptr_array_add(args, (char *)"ferry");
    for (a = first; a; a = va_arg(ap, const char *)) {
        g_ptr_array_add(args, (char *)a);
    }
    g_ptr_array_add(args, NULL);
    return qemu_parse_options(args->len - 1, (char **)args->pdata, o, errp);
}

static void parse_ok(VMOptions *o, const char *first, ...)
{
    GError *err = NULL;
    va_list ap;
    bool ok;

    va_start(ap, first);
    ok = parse_v(o, &err, first, ap);
    va_end(ap);
    if (!ok) {
        g_error("unexpected parse failure: %s", err->message);
    }
}

/* Must fail with exactly msg (when given) or a message containing part. */
static void parse_bad(const char *msg, const char *part, const char *first,
                      ...)
{
    VMOptions o;
    GError *err = NULL;
    va_list ap;
    bool ok;

    va_start(ap, first);
    ok = parse_v(&o, &err, first, ap);
    va_end(ap);
    g_assert_false(ok);
    g_assert_nonnull(err);
    if (msg) {
        g_assert_cmpstr(err->message, ==, msg);
    }
    if (part && !strstr(err->message, part)) {
        g_error("message '%s' lacks '%s'", err->message, part);
    }
    g_error_free(err);
    qemu_free_options(&o);
}

static void test_defaults(void)
{
    VMOptions o;

    parse_ok(&o, NULL);
    g_assert_cmpstr(o.machine.type, ==, "pc");
    g_assert_cmpuint(o.machine.ram_size, ==, 128 * MiB);
    g_assert_cmpint(o.machine.smp_cpus, ==, 1);
    g_assert_false(o.machine.accel_kvm);
    g_assert_false(o.start_paused);
    g_assert_null(o.incoming);
    g_assert_cmpstr(o.machine.serial, ==, "null");
    g_assert_cmpuint(o.qmp_specs->len, ==, 0);
    qemu_free_options(&o);
}

static void test_memory_sizes(void)
{
    static const struct {
        const char *arg;
        uint64_t size;
    } cases[] = {
        { "64", 64 * MiB }, { "64M", 64 * MiB }, { "64m", 64 * MiB },
        { "2G", 2048 * MiB }, { "1.5G", 1536 * MiB }, { "size=256M", 256 * MiB },
        { "size=1", 1 * MiB }, { "65536K", 64 * MiB }, { "5000B", 8192 },
    };
    size_t i;

    for (i = 0; i < ARRAY_SIZE(cases); i++) {
        VMOptions o;

        parse_ok(&o, "-m", cases[i].arg, NULL);
        g_assert_cmpuint(o.machine.ram_size, ==, cases[i].size);
        g_assert_true(o.ram_size_given);
        qemu_free_options(&o);
    }
    parse_bad(NULL, "-m: invalid size 'abc'", "-m", "abc", NULL);
    parse_bad(NULL, "'-5'", "-m", "-5", NULL);
    parse_bad(NULL, "'12X'", "-m", "12X", NULL);
    parse_bad(NULL, "zero", "-m", "0", NULL);
    parse_bad(NULL, "too large", "-m", "99999999999999999999", NULL);
    parse_bad(NULL, "'maxmem'", "-m", "1G,maxmem=2G", NULL);
    parse_bad("-m: requires an argument", NULL, "-m", NULL);
}

static void test_smp_accel(void)
{
    VMOptions o;

    parse_ok(&o, "-smp", "4", "-accel", "kvm", NULL);
    g_assert_cmpint(o.machine.smp_cpus, ==, 4);
    g_assert_true(o.machine.accel_kvm);
    qemu_free_options(&o);

    parse_ok(&o, "--smp", "cpus=2", "-enable-kvm", NULL);
    g_assert_cmpint(o.machine.smp_cpus, ==, 2);
    g_assert_true(o.machine.accel_kvm);
    qemu_free_options(&o);

    parse_ok(&o, "-smp", "sockets=2,cores=2,threads=1", NULL);
    g_assert_cmpint(o.machine.smp_cpus, ==, 4);
    qemu_free_options(&o);

    parse_ok(&o, "-smp", "255", "-accel", "accel=kvm", NULL);
    g_assert_cmpint(o.machine.smp_cpus, ==, 255);
    qemu_free_options(&o);

    parse_ok(&o, "-machine", "none,accel=kvm:tcg", NULL);
    g_assert_true(o.machine.accel_kvm);
    qemu_free_options(&o);

    parse_bad(NULL, "1..255", "-smp", "0", NULL);
    parse_bad(NULL, "1..255", "-smp", "256", NULL);
    parse_bad(NULL, "invalid number 'two'", "-smp", "two", NULL);
    parse_bad(NULL, "topology", "-smp", "4,sockets=3", NULL);
    parse_bad(NULL, "hotplug", "-smp", "2,maxcpus=4", NULL);
    /* "tcg" is "no KVM"; main() refuses it for a machine with vCPUs. */
    parse_ok(&o, "-M", "x-ram", "-accel", "tcg", NULL);
    g_assert_true(o.machine.accel_tcg);
    g_assert_false(o.machine.accel_kvm);
    qemu_free_options(&o);

    parse_bad(NULL, "'xen'", "-accel", "xen", NULL);
    parse_bad(NULL, "'qtest'", "-machine", "pc,accel=qtest", NULL);
}

static void test_machine_merge(void)
{
    VMOptions o;

    parse_ok(&o, "-M", "none", NULL);
    g_assert_cmpstr(o.machine.type, ==, "none");
    qemu_free_options(&o);

    parse_ok(&o, "-machine", "type=none", NULL);
    g_assert_cmpstr(o.machine.type, ==, "none");
    qemu_free_options(&o);

    /* Repeated -machine merge; later keys win. */
    parse_ok(&o, "-M", "pc,usb=off", "-object",
             "memory-backend-ram,id=mem0,size=64M",
             "-machine", "memory-backend=mem0", "-machine", "type=none", NULL);
    g_assert_cmpstr(o.machine.type, ==, "none");
    g_assert_cmpstr(o.machine.memory_backend, ==, "mem0");
    g_assert_cmpuint(o.machine.ram_size, ==, 64 * MiB);
    qemu_free_options(&o);

    parse_ok(&o, "-machine", "help", NULL);
    g_assert_true(o.machine_help);
    qemu_free_options(&o);

    parse_bad(NULL, "'bogus'", "-M", "none,bogus=1", NULL);
    parse_bad(NULL, "empty", "-M", "none,usb=off,", NULL);
}

static void test_memory_backend(void)
{
    VMOptions o;
    MemoryBackend *be;

    parse_ok(&o, "-m", "128M", "-object",
             "memory-backend-memfd,id=ram0,size=128M,prealloc=on",
             "-machine", "pc,memory-backend=ram0", NULL);
    g_assert_cmpuint(o.machine.backends->len, ==, 1);
    be = g_ptr_array_index(o.machine.backends, 0);
    g_assert_cmpstr(be->id, ==, "ram0");
    g_assert_cmpuint(be->size, ==, 128 * MiB);
    g_assert_cmpint(be->cfg.type, ==, RAM_BACKEND_MEMFD);
    g_assert_true(be->cfg.share);       /* memfd default */
    g_assert_true(be->cfg.prealloc);
    qemu_free_options(&o);

    parse_ok(&o, "-object", "memory-backend-file,id=f,size=1G,"
             "mem-path=/dev/hugepages,share=on", "-M", "memory-backend=f",
             NULL);
    be = g_ptr_array_index(o.machine.backends, 0);
    g_assert_cmpint(be->cfg.type, ==, RAM_BACKEND_FILE);
    g_assert_cmpstr(be->cfg.mem_path, ==, "/dev/hugepages");
    g_assert_true(be->cfg.share);
    g_assert_cmpuint(o.machine.ram_size, ==, 1024 * MiB);
    qemu_free_options(&o);

    parse_ok(&o, "-object", "memory-backend-ram,id=r,size=64M",
             "-object", "memory-backend-memfd,id=h,size=2M,hugetlb=on,"
             "hugetlbsize=2M,share=off", NULL);
    g_assert_cmpuint(o.machine.backends->len, ==, 2);
    be = g_ptr_array_index(o.machine.backends, 0);
    g_assert_false(be->cfg.share);      /* ram default */
    be = g_ptr_array_index(o.machine.backends, 1);
    g_assert_true(be->cfg.hugetlb);
    g_assert_false(be->cfg.share);
    g_assert_cmpuint(be->cfg.hugetlbsize, ==, 2 * MiB);
    g_assert_null(o.machine.memory_backend);
    qemu_free_options(&o);

    /* Value with an escaped comma. */
    parse_ok(&o, "-object", "memory-backend-file,id=f,size=4M,"
             "mem-path=/tmp/a,,b", NULL);
    be = g_ptr_array_index(o.machine.backends, 0);
    g_assert_cmpstr(be->mem_path, ==, "/tmp/a,b");
    qemu_free_options(&o);

    parse_bad("Size specified by -m option must match size of explicitly "
              "specified 'memory-backend' property", NULL,
              "-m", "64M", "-object", "memory-backend-ram,id=r,size=128M",
              "-M", "pc,memory-backend=r", NULL);
    parse_bad("Memory backend 'nope' not found", NULL,
              "-M", "memory-backend=nope", NULL);
    parse_bad(NULL, "duplicate object id 'r'",
              "-object", "memory-backend-ram,id=r,size=1M",
              "-object", "memory-backend-ram,id=r,size=1M", NULL);
    parse_bad(NULL, "'id' is missing", "-object",
              "memory-backend-ram,size=1M", NULL);
    parse_bad(NULL, "'size' is missing", "-object",
              "memory-backend-ram,id=x", NULL);
    parse_bad(NULL, "'mem-path' is missing", "-object",
              "memory-backend-file,id=x,size=1M", NULL);
    parse_bad(NULL, "'iothread'", "-object", "iothread,id=x", NULL);
    parse_bad(NULL, "'hugetlb'", "-object",
              "memory-backend-ram,id=x,size=1M,hugetlb=on", NULL);
    parse_bad(NULL, "'maybe'", "-object",
              "memory-backend-ram,id=x,size=1M,share=maybe", NULL);
    parse_bad(NULL, "'1Q'", "-object", "memory-backend-ram,id=x,size=1Q",
              NULL);
}

static void test_devices_serial_qmp(void)
{
    VMOptions o;
    LoaderDevice *ld;

    parse_ok(&o, "-device", "loader,file=/tmp/blob,addr=0x100000,force-raw=on",
             "-device", "loader,addr=4096,file=b2", "-serial", "file:/tmp/s",
             "-qmp", "unix:/tmp/q.sock,server=on,wait=off",
             "-qmp", "tcp:127.0.0.1:4444,server,nowait", NULL);
    g_assert_cmpuint(o.machine.loaders->len, ==, 2);
    ld = g_ptr_array_index(o.machine.loaders, 0);
    g_assert_cmpstr(ld->file, ==, "/tmp/blob");
    g_assert_cmpuint(ld->addr, ==, 0x100000);
    ld = g_ptr_array_index(o.machine.loaders, 1);
    g_assert_cmpuint(ld->addr, ==, 4096);
    g_assert_cmpstr(o.machine.serial, ==, "file:/tmp/s");
    g_assert_cmpuint(o.qmp_specs->len, ==, 2);
    g_assert_cmpstr(g_ptr_array_index(o.qmp_specs, 1), ==,
                    "tcp:127.0.0.1:4444,server,nowait");
    qemu_free_options(&o);

    parse_ok(&o, "-nographic", NULL);
    g_assert_cmpstr(o.machine.serial, ==, "stdio");
    qemu_free_options(&o);
    parse_ok(&o, "-nographic", "-serial", "null", NULL);
    g_assert_cmpstr(o.machine.serial, ==, "null");
    qemu_free_options(&o);
    parse_ok(&o, "-nodefaults", "-display", "none", NULL);
    g_assert_cmpstr(o.machine.serial, ==, "none");
    qemu_free_options(&o);
    /* As QEMU: -nographic does not bring back what -nodefaults removed. */
    parse_ok(&o, "-nographic", "-nodefaults", NULL);
    g_assert_cmpstr(o.machine.serial, ==, "none");
    qemu_free_options(&o);

    parse_bad(NULL, "'virtio-net'", "-device", "virtio-net", NULL);
    parse_bad(NULL, "'addr' is missing", "-device", "loader,file=x", NULL);
    parse_bad(NULL, "'file' is missing", "-device", "loader,addr=0", NULL);
    parse_bad(NULL, "'0xZZ'", "-device", "loader,file=x,addr=0xZZ", NULL);
    parse_bad(NULL, "'data'", "-device", "loader,data=1,addr=0", NULL);
    parse_bad(NULL, "'pty'", "-serial", "pty", NULL);
    parse_bad(NULL, "'file:'", "-serial", "file:", NULL);
    parse_bad(NULL, "'stdio'", "-qmp", "stdio", NULL);
    parse_bad(NULL, "'gtk'", "-display", "gtk", NULL);
    parse_bad(NULL, "-daemonize", "-daemonize", "-nographic", NULL);
}

static void test_misc(void)
{
    VMOptions o;

    parse_ok(&o, "-S", "-name", "vm1", "-incoming", "defer", "-daemonize",
             "-pidfile", "/tmp/p", "-kernel", "k.bin", "-append", "a b c",
             NULL);
    g_assert_true(o.start_paused);
    g_assert_cmpstr(o.machine.name, ==, "vm1");
    g_assert_cmpstr(o.incoming, ==, "defer");
    g_assert_true(o.daemonize);
    g_assert_cmpstr(o.pidfile, ==, "/tmp/p");
    g_assert_cmpstr(o.machine.kernel_filename, ==, "k.bin");
    g_assert_cmpstr(o.machine.kernel_cmdline, ==, "a b c");
    qemu_apply_options(&o);
    g_assert_cmpstr(incoming_uri, ==, "defer");
    g_assert_cmpstr(qemu_name, ==, "vm1");
    qemu_free_options(&o);

    parse_ok(&o, "-name", "guest=vm2,debug-threads=on", "--incoming",
             "tcp:0:4444", NULL);
    g_assert_cmpstr(o.machine.name, ==, "vm2");
    g_assert_cmpstr(o.incoming, ==, "tcp:0:4444");
    qemu_free_options(&o);

    parse_ok(&o, "-version", NULL);
    g_assert_true(o.show_version);
    qemu_free_options(&o);
    parse_ok(&o, "--help", NULL);
    g_assert_true(o.show_help);
    qemu_free_options(&o);
    parse_ok(&o, "-h", NULL);
    g_assert_true(o.show_help);
    qemu_free_options(&o);

    parse_bad("-foo: invalid option", NULL, "-foo", NULL);
    parse_bad("--bar: invalid option", NULL, "--bar", NULL);
    parse_bad("---m: invalid option", NULL, "---m", "1", NULL);
    parse_bad("-kernel: requires an argument", NULL, "-kernel", NULL);
    parse_bad(NULL, "disk.img: unexpected argument", "disk.img", NULL);
    parse_bad(NULL, "-incoming: empty", "-incoming", "", NULL);
}

static void test_trace(void)
{
    VMOptions o;

    parse_ok(&o, NULL);
    g_assert_cmpuint(o.trace_patterns->len, ==, 0);
    g_assert_null(o.trace_file);
    qemu_free_options(&o);

    /* Patterns keep their order; the last file= wins, as in QEMU. */
    parse_ok(&o, "-trace", "migrate_*", "-trace",
             "enable=-migrate_set_state,file=/tmp/t1", "-trace", "file=/tmp/t2",
             NULL);
    g_assert_cmpuint(o.trace_patterns->len, ==, 2);
    g_assert_cmpstr(g_ptr_array_index(o.trace_patterns, 0), ==, "migrate_*");
    g_assert_cmpstr(g_ptr_array_index(o.trace_patterns, 1), ==,
                    "-migrate_set_state");
    g_assert_cmpstr(o.trace_file, ==, "/tmp/t2");
    qemu_free_options(&o);

    parse_bad("-trace: requires an argument", NULL, "-trace", NULL);
    parse_bad("-trace: invalid parameter 'events'", NULL,
              "-trace", "events=/tmp/list", NULL);
    parse_bad("-trace: empty pattern", NULL, "-trace", "enable=", NULL);
    parse_bad("-trace: empty file", NULL, "-trace", "a*,file=", NULL);
}

/* What libvirt 9.0 puts on a diskless domain's command line. */
static void test_libvirt_options(void)
{
    g_autofree char *dir = g_dir_make_tmp("test-vl-XXXXXX", NULL);
    g_autofree char *key = g_build_filename(dir, "key", NULL);
    g_autofree char *secret = g_strdup_printf(
        "secret,id=masterKey0,format=raw,file=%s", key);
    const Chardev *c;
    VMOptions o;

    g_assert_true(g_file_set_contents(key, "k", 1, NULL));
    parse_ok(&o, "-name", "guest=g,debug-threads=on", "-S", "-object", secret,
             "-machine", "x-ram,usb=off,dump-guest-core=off,memory-backend=r",
             "-accel", "tcg", "-m", "16",
             "-object", "memory-backend-ram,id=r,size=16777216",
             "-overcommit", "mem-lock=off",
             "-smp", "1,sockets=1,cores=1,threads=1",
             "-uuid", "3D3C9F3A-1B2C-4D5E-8F90-112233445566",
             "-display", "none", "-no-user-config", "-nodefaults",
             "-chardev", "socket,id=charmonitor,fd=0,server=on,wait=off",
             "-mon", "chardev=charmonitor,id=monitor,mode=control",
             "-rtc", "base=utc,driftfix=slew", "-no-shutdown", "-no-reboot",
             "-no-acpi",
             "-boot", "strict=on",
             "-chardev", "file,id=charserial0,path=/tmp/s.log",
             "-device", "isa-serial,chardev=charserial0,id=serial0,index=0",
             "-audiodev", "{\"id\":\"audio1\",\"driver\":\"none\"}",
             "-msg", "timestamp=on", "-sandbox", "off", "-incoming", "defer",
             NULL);
    g_assert_cmpstr(o.machine.name, ==, "g");
    g_assert_cmpstr(o.uuid, ==, "3d3c9f3a-1b2c-4d5e-8f90-112233445566");
    g_assert_true(o.no_shutdown);
    g_assert_true(o.no_reboot);
    g_assert_true(o.msg_timestamp);
    g_assert_cmpstr(o.machine.serial, ==, "file:/tmp/s.log");
    g_assert_cmpuint(o.qmp_specs->len, ==, 1);
    g_assert_cmpstr(g_ptr_array_index(o.qmp_specs, 0), ==, "fd:0");
    g_assert_cmpuint(o.chardevs->len, ==, 2);
    c = g_ptr_array_index(o.chardevs, 0);
    g_assert_cmpstr(c->frontend, ==, "monitor");
    c = g_ptr_array_index(o.chardevs, 1);
    g_assert_cmpstr(c->frontend, ==, "serial");
    qemu_free_options(&o);

    parse_ok(&o, "-chardev", "file,id=f,path=/tmp/s.log,append=on",
             "-device", "isa-serial,chardev=f", NULL);
    g_assert_cmpstr(o.machine.serial, ==, "file-append:/tmp/s.log");
    qemu_free_options(&o);

    parse_ok(&o, "-chardev", "socket,id=m,path=/tmp/m.sock,server=on,wait=off",
             "-mon", "m,mode=control", "-audiodev", "none,id=a", NULL);
    g_assert_cmpstr(g_ptr_array_index(o.qmp_specs, 0), ==,
                    "unix:/tmp/m.sock,server=on,wait=off");
    qemu_free_options(&o);

    parse_bad(NULL, "'no-such'", "-mon", "chardev=no-such,mode=control",
              NULL);
    parse_bad(NULL, "mode=control", "-chardev",
              "socket,id=m,path=/x,server=on,wait=off", "-mon", "m", NULL);
    parse_bad(NULL, "already used by the monitor", "-chardev",
              "socket,id=m,path=/x,server=on,wait=off", "-mon",
              "m,mode=control", "-mon", "m,mode=control", NULL);
    parse_bad(NULL, "not a socket", "-chardev", "null,id=n", "-mon",
              "n,mode=control", NULL);
    parse_bad(NULL, "socket cannot back", "-chardev",
              "socket,id=m,path=/x,server=on,wait=off", "-device",
              "isa-serial,chardev=m", NULL);
    parse_bad(NULL, "server=on,wait=off", "-chardev", "socket,id=m,path=/x",
              NULL);
    parse_bad(NULL, "not an open descriptor", "-chardev",
              "socket,id=m,fd=987654,server=on,wait=off", NULL);
    parse_bad(NULL, "'pty'", "-chardev", "pty,id=p", NULL);
    parse_bad(NULL, "duplicate chardev id 'n'", "-chardev", "null,id=n",
              "-chardev", "null,id=n", NULL);
    parse_bad(NULL, "only index 0", "-chardev", "null,id=n", "-device",
              "isa-serial,chardev=n,index=1", NULL);
    parse_bad(NULL, "only one serial", "-serial", "null", "-chardev",
              "null,id=n", "-device", "isa-serial,chardev=n", NULL);
    parse_bad(NULL, "mem-lock=on", "-overcommit", "mem-lock=on", NULL);
    parse_bad(NULL, "invalid UUID", "-uuid", "not-a-uuid", NULL);
    parse_bad(NULL, "RTC base", "-rtc", "base=yesterday", NULL);
    parse_bad(NULL, "'bogus'", "-boot", "strict=on,bogus=1", NULL);
    parse_bad(NULL, "no sound device", "-audiodev", "pa,id=a", NULL);
    parse_bad(NULL, "no sound device", "-audiodev",
              "{\"id\":\"a\",\"driver\":\"alsa\"}", NULL);
    parse_bad(NULL, "seccomp", "-sandbox", "on", NULL);
    parse_bad(NULL, "does-not-exist", "-object",
              "secret,id=s,file=/does-not-exist", NULL);
    parse_bad(NULL, "keyid", "-object", "secret,id=s,data=x,keyid=k", NULL);
    parse_bad(NULL, "not a regular file", "-object",
              "secret,id=s,file=/dev/zero", NULL);
    parse_bad(NULL, "nested too deeply", "-audiodev",
              "{\"a\":[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]}", NULL);

    g_unlink(key);
    g_rmdir(dir);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/vl/defaults", test_defaults);
    g_test_add_func("/vl/memory-sizes", test_memory_sizes);
    g_test_add_func("/vl/smp-accel", test_smp_accel);
    g_test_add_func("/vl/machine-merge", test_machine_merge);
    g_test_add_func("/vl/memory-backend", test_memory_backend);
    g_test_add_func("/vl/devices-serial-qmp", test_devices_serial_qmp);
    g_test_add_func("/vl/misc", test_misc);
    g_test_add_func("/vl/libvirt-options", test_libvirt_options);
    g_test_add_func("/vl/trace", test_trace);
    return g_test_run();
}
