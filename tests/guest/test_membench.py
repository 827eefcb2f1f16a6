#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The guest kit's membench, built for the host: its lines, its checks.

membench (guest/membench.c) is what the split-memory VM benchmarks run
in the guest. Here it runs on the host, briefly, in every mode: it must
print a line per second and a summary that the benchmarks parse, touch
pages at a plausible rate, find no bad page on correct memory, and find
the page that MEMBENCH_CORRUPT damages (exit status 1), in both a read
and a write mode. Usage: test_membench.py PATH-TO-MEMBENCH. TAP output.
"""

import os
import re
import subprocess
import sys

DONE = re.compile(r"^membench: done mode=(\w+) seconds=([\d.]+) "
                  r"pages=(\d+) MB/s=([\d.]+) bad=(\d+)$", re.M)
SECOND = re.compile(r"^membench: t=(\d+) MB/s=([\d.]+) pages=(\d+)$", re.M)
FILLED = re.compile(r"^membench: filled (\d+) MiB pages=(\d+) ms=\d+$", re.M)

n = 0
failed = 0


def check(ok, what):
    global n, failed
    n += 1
    failed += not ok
    print(f"{'ok' if ok else 'not ok'} {n} - {what}", flush=True)


def run(binary, *args, env=None):
    p = subprocess.run([binary, *map(str, args)], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=60,
                       env={**os.environ, **(env or {})})
    return p.returncode, p.stdout, p.stderr


def main():
    binary = sys.argv[1]
    for mode in ("seqread", "seqwrite", "randread", "randwrite"):
        rc, out, err = run(binary, 8, mode, 2)
        done = DONE.search(out)
        filled = FILLED.search(out)
        seconds = SECOND.findall(out)
        check(rc == 0 and done and done.group(1) == mode and
              done.group(5) == "0",
              f"{mode}: exits 0 with bad=0 ({rc}, {done and done.group(0)}"
              f"{err.strip()})")
        check(filled and filled.group(2) == str(8 * 256),
              f"{mode}: fills 8 MiB, 2048 pages "
              f"({filled and filled.group(0)})")
        check([int(t) for t, _, _ in seconds] == list(range(1, len(seconds)
                                                          + 1)) and
              len(seconds) >= 1,
              f"{mode}: a line per second, numbered ({len(seconds)} lines)")
        check(done and float(done.group(2)) >= 2.0 and
              float(done.group(4)) > 10 and int(done.group(3)) >= 2048,
              f"{mode}: runs 2 s and touches pages "
              f"({done and done.group(0)})")
    for mode in ("seqread", "randwrite"):
        rc, out, _ = run(binary, 1, mode, 1, env={"MEMBENCH_CORRUPT": "5"})
        done = DONE.search(out)
        check(rc == 1 and done and int(done.group(5)) >= 1,
              f"{mode}: finds the damaged page, exit 1 "
              f"({rc}, {done and done.group(0)})")
    for args in ((0, "seqread", 1), (8, "bogus", 1), (8, "seqread", "x"),
                 ("9" * 20, "seqread", 1), (8, "seqread", "-1"),
                 (8, "seqread")):
        rc, _, err = run(binary, *args)
        check(rc == 2 and "usage:" in err, f"refuses {args} (exit {rc})")
    print(f"1..{n}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
