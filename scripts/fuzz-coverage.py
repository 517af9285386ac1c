#!/usr/bin/env python3
"""Line coverage of the migration stream parsers reached by the fuzz
targets' corpora (clang source-based coverage), for docs/testing.md.

    scripts/fuzz-coverage.py [--build-cov DIR] [--extra-corpus DIR]

DIR (default build-cov) is configured once with
    CC=clang meson setup build-cov --buildtype=debug \\
        -Dc_args="-fprofile-instr-generate -fcoverage-mapping" \\
        -Dc_link_args="-fprofile-instr-generate -fcoverage-mapping"
(the script builds the standalone targets it needs).  Each stream-facing
target replays its committed seeds (tests/fuzz/corpus/NAME) and, with
--extra-corpus, also EXTRA/NAME (e.g. build-fuzz/fuzz-corpus after a
libFuzzer campaign).  Prints covered/total lines for savevm.c, vmstate.c,
postcopy-ram.c, pc-vmstate.c and the load side of ram.c (its functions
with "load" in the name), over all targets together.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
TARGETS = ("fuzz-loadvm", "fuzz-ram-load", "fuzz-postcopy",
           "fuzz-return-path", "fuzz-pc-vmstate")
FILES = ("migration/savevm.c", "migration/vmstate.c",
         "migration/postcopy-ram.c", "hw/pc-vmstate.c")
# ram.c's load side: its functions with these prefixes (static ones are
# named "ram.c:NAME" in the coverage data).
RAM_LOAD = (r"^(ram\.c:)?(ram_load|read_block_list|load_block|mark_received|"
            r"load_page|postcopy_tmp_prepare|load_channel|ram_h_load)")


def tool(name):
    for cand in (name + "-14", name):
        for d in os.environ.get("PATH", "").split(":"):
            if os.access(os.path.join(d, cand), os.X_OK):
                return cand
    sys.exit(f"{name} not found (Debian package llvm)")


def run_corpora(build, targets, extra, profdir):
    for t in targets:
        exe = os.path.join(build, "tests", "fuzz", t + "-standalone")
        dirs = [os.path.join(ROOT, "tests", "fuzz", "corpus", t)]
        if extra and os.path.isdir(os.path.join(extra, t)):
            dirs.append(os.path.join(extra, t))
        env = dict(os.environ,
                   LLVM_PROFILE_FILE=os.path.join(profdir, t + "-%p.profraw"))
        subprocess.run([exe] + dirs, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def file_lines(cov, objects, profdata):
    """{path relative to the tree: (covered, total) lines}."""
    out = subprocess.run([cov, "export", "-summary-only",
                          f"-instr-profile={profdata}"] + objects,
                         capture_output=True, text=True, check=True).stdout
    root = os.path.realpath(ROOT) + "/"
    res = {}
    for f in json.loads(out)["data"][0]["files"]:
        name = os.path.normpath(f["filename"])
        if name.startswith(root):
            lines = f["summary"]["lines"]
            res[name[len(root):]] = (lines["covered"], lines["count"])
    return res


def function_lines(cov, objects, profdata, regex):
    """(covered, total) lines of the functions whose name matches."""
    out = subprocess.run([cov, "show", f"-instr-profile={profdata}",
                          f"-name-regex={regex}"] + objects,
                         capture_output=True, text=True, check=True).stdout
    seen = {}
    func = None
    for line in out.splitlines():
        if line.endswith(":") and "|" not in line:
            func = line[:-1]
            continue
        m = re.match(r"\s*(\d+)\|\s*([\d.]+[kMG]?)\|", line)
        if m and func:
            n = m.group(2)
            seen[(func, m.group(1))] = not n.startswith("0")
    return sum(seen.values()), len(seen)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build-cov", default=os.path.join(ROOT, "build-cov"))
    ap.add_argument("--extra-corpus")
    ap.add_argument("--targets", default=",".join(TARGETS),
                    help="comma-separated subset of " + ",".join(TARGETS))
    args = ap.parse_args()
    targets = args.targets.split(",")
    subprocess.run(["ninja", "-C", args.build_cov] +
                   [f"tests/fuzz/{t}-standalone" for t in TARGETS],
                   check=True, stdout=subprocess.DEVNULL)
    cov, profdata_tool = tool("llvm-cov"), tool("llvm-profdata")
    with tempfile.TemporaryDirectory() as d:
        run_corpora(args.build_cov, targets, args.extra_corpus, d)
        raws = [os.path.join(d, f) for f in os.listdir(d)]
        profdata = os.path.join(d, "all.profdata")
        subprocess.run([profdata_tool, "merge", "-sparse", "-o", profdata] +
                       raws, check=True)
        exes = [os.path.join(args.build_cov, "tests", "fuzz",
                             t + "-standalone") for t in targets]
        objects = [exes[0]] + [a for e in exes[1:] for a in ("-object", e)]
        rows = file_lines(cov, objects, profdata)
        for path in FILES:
            hit, total = rows.get(path, (0, 0))
            print(f"{path:32} {hit:5}/{total:5} lines "
                  f"{100.0 * hit / max(total, 1):5.1f}%")
        hit, total = function_lines(cov, objects, profdata, RAM_LOAD)
        print(f"{'migration/ram.c (load side)':32} {hit:5}/{total:5} lines "
              f"{100.0 * hit / max(total, 1):5.1f}%")


if __name__ == "__main__":
    main()
