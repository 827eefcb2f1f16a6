#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Validate query-guest-free-memory against the guest's own view.

Boots the guest kit of one Debian kernel under TCG with KASLR on (the
default), generates the kernel's profile from its package with
fctrans-profile, lets the guest allocate, free and hold memory, then:

  1. the guest's kpagedump prints "ready" and waits, holding every buffer
     it needs (the guest is quiet from here on);
  2. the host scans (query-guest-free-memory with the ranges);
  3. the guest snapshots /proc/kpageflags, /proc/buddyinfo, /proc/meminfo
     and prints them.

Then it compares, page by page:
  precision  pages the host calls free that the guest does not hold in
             use (no LRU, anon, slab, page-table, reserved, ... flag)
  recall     free-block heads of the guest (KPF_BUDDY) that the host
             found free; and the host's free total against MemFree
and checks them against the thresholds, and the recognised kernel
against the booted one.  Exits non-zero on any failure.

  tests/vmi/vmi-validate.py [--kernel-pkg linux-image-...] [--mem MiB]
"""

import argparse
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "lib"))
import splitmem as sm  # noqa: E402

PAGE = 4096
MIN_PRECISION = 0.999
MIN_RECALL = 0.95
FIRMWARE_DIRS = ["/usr/share/seabios", "/usr/lib/ipxe/qemu", "/usr/share/qemu"]


def parse_snapshot(text):
    """Classes per pfn (a bytearray), buddyinfo lines, meminfo dict."""
    m = re.search(r"kpagedump: begin pfns=(\d+)\n(.*?)kpagedump: end runs=(\d+)",
                  text, re.S)
    if not m:
        raise RuntimeError("no kpagedump snapshot on the console")
    npfn, body = int(m.group(1)), m.group(2)
    classes = bytearray()
    buddyinfo, meminfo = [], {}
    runs = 0
    for line in body.splitlines():
        if line.startswith("kpagedump: buddyinfo "):
            buddyinfo.append(line[len("kpagedump: buddyinfo "):])
        elif line.startswith("kpagedump: meminfo "):
            k, v = line[len("kpagedump: meminfo "):].split(":", 1)
            meminfo[k] = int(v.split()[0]) * 1024
        else:
            for tok in line.split():
                classes += tok[0].encode() * int(tok[1:])
                runs += 1
    if len(classes) != npfn or runs != int(m.group(3)):
        raise RuntimeError(f"garbled snapshot: {len(classes)} of {npfn} pfns,"
                           f" {runs} of {m.group(3)} runs")
    return classes, buddyinfo, meminfo


def compare(classes, ranges, meminfo):
    free = bytearray(len(classes))
    beyond = 0
    for r in ranges:
        first, n = r["start"] // PAGE, r["length"] // PAGE
        inside = max(0, min(n, len(classes) - first))
        free[first:first + inside] = b"\x01" * inside
        beyond += n - inside
    called = sum(free) + beyond
    counts = {c: 0 for c in "BUNX"}
    heads = heads_found = 0
    for pfn, c in enumerate(classes):
        ch = chr(c)
        if free[pfn]:
            counts[ch] += 1
        if ch == "B":
            heads += 1
            heads_found += free[pfn]
    wrong = counts["U"] + counts["X"] + beyond
    return {
        "called_free": called,
        "called_in_use": wrong,
        "called_heads": counts["B"],
        "called_noflags": counts["N"],
        "precision": 1 - wrong / called if called else 0.0,
        "heads": heads,
        "recall_heads": heads_found / heads if heads else 0.0,
        "recall_memfree": called * PAGE / meminfo["MemFree"],
    }


def newest_trixie_kernel():
    """The newest linux-image-<version>+deb13-amd64 the archive has."""
    out = subprocess.run(["apt-cache", "search", "--names-only",
                          r"^linux-image-[0-9.]+\+deb13-amd64$"],
                         check=True, stdout=subprocess.PIPE, text=True).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    if not names:
        raise RuntimeError("no trixie kernel package (run "
                           "scripts/install-deps.sh for the trixie source)")

    def key(name):
        ver = name[len("linux-image-"):].split("+")[0]
        return [int(x) for x in ver.split(".")]
    return max(names, key=key)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel-pkg", help="linux-image package of the guest "
                    "(default: the guest kit's default kernel); 'trixie' "
                    "picks the newest Debian 13 (6.12) amd64 kernel")
    ap.add_argument("--mem", type=int, default=768, help="guest MiB")
    ap.add_argument("--scans", type=int, default=5,
                    help="extra scans for the timing figures")
    args = ap.parse_args()

    pkg = args.kernel_pkg
    if pkg == "trixie":
        pkg = newest_trixie_kernel()
    if pkg:
        sm.log(f"kernel package: {pkg}")
    kit = sm.guest_kit(pkg)
    wdir = sm.workdir("vmi-")
    profdir = os.path.join(wdir, "profiles")
    os.makedirs(profdir)
    tool = os.path.join(sm.BUILD, "splitmem", "tools", "fctrans-profile")
    subprocess.run([tool, "-q", "-d", profdir,
                    os.path.join(kit, "kernel.deb")], check=True)

    # Debian's firmware, in case the binary's relocated firmware path
    # (under its build tree's qemu-bundle) does not have it.
    extra = []
    for d in FIRMWARE_DIRS:
        if os.path.isdir(d):
            extra += ["-L", d]
    vm = sm.Vm("vmi", wdir, args.mem, kit=kit, extra=extra)
    qmp, con = vm.qmp, vm.serial
    booted = con.wait(r"splitmem-guest: up, kernel ([^\s,]+),",
                      timeout=180).group(1)
    sm.log(f"guest up: kernel {booted}, {args.mem} MiB, accel {sm.ACCEL}")

    # A scan while the guest boots its shell must already work.
    info = qmp.cmd("query-guest-free-memory", profiles=profdir)
    sm.log(f"first scan: {info['free-bytes'] >> 20} MiB free")

    # Make the allocator's state interesting: page cache, a fragmented
    # anonymous mapping that stays allocated, memory used and released.
    con.run("dd if=/dev/zero of=/tmp/cache bs=1M count=32 2>/dev/null")
    con.run("kpagedump hold 96 3 > /tmp/hold.log & sleep 3; cat /tmp/hold.log",
            timeout=120)
    con.run("kpagedump churn 128", timeout=120)
    con.run("sync; echo 1 > /proc/sys/vm/drop_caches; sleep 1")

    con.mark()
    con.send("kpagedump snapshot")
    con.wait(r"^kpagedump: ready$", timeout=60)
    time.sleep(0.5)         # let the shell and console go idle
    info = qmp.cmd("query-guest-free-memory", profiles=profdir, ranges=True)
    con.send("")
    m = con.wait(r"^kpagedump: end runs=\d+$", timeout=300)
    classes, buddyinfo, meminfo = parse_snapshot(con.buf[:m.end()])

    times = [info["scan-time"]]
    for _ in range(args.scans):
        times.append(qmp.cmd("query-guest-free-memory",
                             profiles=profdir)["scan-time"])
    hmp = qmp.hmp(f"info guest_free_memory {profdir}")
    vm.quit()

    res = compare(classes, info["ranges"], meminfo)
    buddy_pages = 0
    for line in buddyinfo:
        counts = [int(x) for x in line.split()[4:]]
        buddy_pages += sum(n << o for o, n in enumerate(counts))
    scanned_mib = info["scanned-bytes"] / (1 << 20)
    best = min(times)

    print(f"kernel        {info['kernel']} (booted {booted}), KASLR offset "
          f"{info['kaslr-offset']:#x}")
    print(f"scan          {scanned_mib:.0f} MiB of RAM, {info['free-ranges']}"
          f" ranges, {info['free-blocks']} blocks, "
          f"{info['rejected-blocks']} rejected")
    print(f"scan time     {best} us best, {sorted(times)[len(times) // 2]} us "
          f"median of {len(times)} ({best / scanned_mib * 1024:.0f} us/GiB)")
    print(f"free (host)   {res['called_free']} pages "
          f"({res['called_free'] * PAGE >> 20} MiB)")
    print(f"free (guest)  MemFree {meminfo['MemFree'] >> 20} MiB, "
          f"buddyinfo {buddy_pages} pages, {res['heads']} pages with "
          f"KPF_BUDDY")
    print(f"precision     {res['precision']:.5f} ({res['called_in_use']} "
          f"pages called free are in use; {res['called_heads']} KPF_BUDDY, "
          f"{res['called_noflags']} flagless)")
    print(f"recall        KPF_BUDDY pages {res['recall_heads']:.5f}, "
          f"MemFree {res['recall_memfree']:.5f}")
    print("hmp           " + hmp.strip().replace("\n", "\n              "))

    failures = []
    if info["kernel"] != booted:
        failures.append(f"recognised {info['kernel']}, booted {booted}")
    if res["precision"] < MIN_PRECISION:
        failures.append(f"precision {res['precision']:.5f} < {MIN_PRECISION}")
    if res["recall_heads"] < MIN_RECALL:
        failures.append(f"KPF_BUDDY recall {res['recall_heads']:.5f} < "
                        f"{MIN_RECALL}")
    if res["recall_memfree"] < MIN_RECALL:
        failures.append(f"MemFree recall {res['recall_memfree']:.5f} < "
                        f"{MIN_RECALL}")
    if best > 1e6 * scanned_mib / 1024:
        failures.append(f"scan of {scanned_mib:.0f} MiB took {best} us "
                        f"(> 1 s/GiB)")
    for f in failures:
        print(f"FAIL: {f}")
    print(f"vmi-validate {info['kernel']}: "
          f"{'FAILED' if failures else 'passed'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
