#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Validate query-guest-free-memory against the guest's own view.

Boots the guest kit of one Debian kernel under TCG with KASLR on (the
default), generates the kernel's profile from its package with
fctrans-profile, lets the guest allocate, free and hold memory, then:

  1. the guest's kpagedump prints "ready" and waits, holding every buffer
     it needs (the guest is quiet from here on);
  2. the host scans (query-guest-free-memory with the ranges);
  3. the guest snapshots /proc/kpageflags between two equal reads of
     /proc/buddyinfo, and /proc/zoneinfo, /proc/meminfo, and prints them.

Every page of a free block, head and tails, has KPF_BUDDY in
/proc/kpageflags; a page with any other flag is in use, and a page with
no flag at all is in no free block either (allocated without flags --
vmalloc, kernel stacks -- or on a per-CPU free list).  So the snapshot
says exactly which pages are free, and /proc/buddyinfo's counts must add
up to them.  (No guest kernel of the tests has CONFIG_PAGE_OWNER, which
would list the allocations; it is not needed.)  Then, page by page:

  precision  share of the pages the host calls free that have KPF_BUDDY
  recall     share of the KPF_BUDDY pages that the host calls free; the
             host's free total against /proc/buddyinfo and MemFree

A second, larger guest boots alongside; scans of both, interleaved,
give the scan cost per GiB at two sizes, whose ratio must show linear
cost.  The recognised kernel must be the booted one.  Exits non-zero on
any failure.

  tests/vmi/vmi-validate.py [--kernel-pkg linux-image-...|trixie]
                            [--mem MiB] [--mem2 MiB]
  tests/vmi/vmi-validate.py --save run.json      keep the raw figures
  tests/vmi/vmi-validate.py --replay run.json [--corrupt-shift PAGES]
                            [--corrupt-cost FACTOR]
  tests/vmi/vmi-validate.py --self-test          synthetic data, no guest

--corrupt-shift moves every range the host reported by that many pages
before comparing, --corrupt-cost multiplies the larger guest's scan
times: the test must then fail (it shows that it can).
"""

import argparse
import json
import os
import random
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "lib"))
import splitmem as sm  # noqa: E402

PAGE = 4096
# Rounds of scan and snapshot until one finds the guest quiet throughout.
SNAPSHOT_TRIES = 3
# The snapshot says exactly which pages are free, the guest is quiet and
# checked unchanged (by buddyinfo's counts) since the scan: a right scan
# matches it page for page (1.00000 on 6.1 and 6.12).  The slack, one
# page in 20000 (6 pages at 768 MiB), is for kernel housekeeping that
# leaves the counts as they were (a page allocated, another freed); a
# range moved by one page already exceeds it (one wrong page a range).
MAX_OFF = 0.00005
MIN_PRECISION = 1 - MAX_OFF
MIN_RECALL = 1 - MAX_OFF
# Scan cost per GiB at the larger guest over that at the smaller one.
MAX_COST_RATIO = 2.0
FIRMWARE_DIRS = ["/usr/share/seabios", "/usr/lib/ipxe/qemu", "/usr/share/qemu"]


def parse_snapshot(text):
    """The snapshot kpagedump printed, as a dict: classes per pfn (a
    bytearray of B, U, N, X), buddyinfo [(zone, [count per order])],
    meminfo {key: bytes}, pcp and threshold (pages), reads, ready."""
    m = re.search(r"kpagedump: begin pfns=(\d+)\n(.*?)kpagedump: end runs=(\d+)",
                  text, re.S)
    if not m:
        raise RuntimeError("no kpagedump snapshot on the console")
    npfn, body = int(m.group(1)), m.group(2)
    snap = {"classes": bytearray(), "buddyinfo": [], "meminfo": {}}
    runs = 0
    for line in body.splitlines():
        if line.startswith("kpagedump: buddyinfo "):
            # "Node 0, zone   Normal  n0 n1 ... n10"
            f = line[len("kpagedump: buddyinfo "):].split()
            snap["buddyinfo"].append((f[3], [int(x) for x in f[4:]]))
        elif line.startswith("kpagedump: meminfo "):
            k, v = line[len("kpagedump: meminfo "):].split(":", 1)
            snap["meminfo"][k] = int(v.split()[0]) * 1024
        elif line.startswith("kpagedump: pcp "):
            f = line.split()
            snap["pcp"], snap["threshold"] = int(f[2]), int(f[4])
        elif line.startswith("kpagedump: stable "):
            kv = dict(x.split("=") for x in line.split()[2:])
            snap["reads"], snap["ready"] = int(kv["reads"]), kv["ready"] == "1"
        else:
            for tok in line.split():
                snap["classes"] += tok[0].encode() * int(tok[1:])
                runs += 1
    if len(snap["classes"]) != npfn or runs != int(m.group(3)):
        raise RuntimeError(f"garbled snapshot: {len(snap['classes'])} of "
                           f"{npfn} pfns, {runs} of {m.group(3)} runs")
    for key in ("pcp", "reads"):
        if key not in snap:
            raise RuntimeError(f"snapshot without its {key} line (old "
                               "guest kit?)")
    return snap


def compare(snap, ranges, shift=0):
    """Compare the host's free ranges (shifted by @shift pages, to show
    that a wrong answer fails) with the guest's snapshot."""
    classes = snap["classes"]
    npfn = len(classes)
    counts = {c: 0 for c in "BUNX"}
    beyond = 0
    for r in ranges:
        first, n = r["start"] // PAGE + shift, r["length"] // PAGE
        lo, hi = max(0, first), max(0, min(first + n, npfn))
        beyond += n - max(0, hi - lo)
        part = bytes(classes[lo:hi])
        for c in counts:
            counts[c] += part.count(c.encode())
    called = sum(counts.values()) + beyond
    buddy_blocks = [0] * max(len(c) for _, c in snap["buddyinfo"])
    for _, zc in snap["buddyinfo"]:
        for o, n in enumerate(zc):
            buddy_blocks[o] += n
    guest_free = classes.count(b"B")
    # Not free for sure: flagged, no page, outside RAM, or flagless (on
    # a per-CPU list or allocated without flags).
    wrong = counts["U"] + counts["X"] + counts["N"] + beyond
    return {
        "called_free": called,
        "called": counts,
        "called_beyond": beyond,
        "called_in_use": wrong,
        "precision": 1 - wrong / called if called else 0.0,
        "guest_free": guest_free,
        "recall": counts["B"] / guest_free if guest_free else 0.0,
        "flagless": classes.count(b"N"),
        "buddy_blocks": buddy_blocks,
        "buddy_pages": sum(n << o for o, n in enumerate(buddy_blocks)),
        "memfree_pages": snap["meminfo"]["MemFree"] // PAGE,
        "threshold": snap["threshold"],
    }


def check_snapshot(snap, res):
    """Failures of the guest's snapshot itself, before any host figure
    can be judged against it."""
    failures = []
    if not snap["reads"]:
        failures.append("buddyinfo never stable while kpageflags was read")
    # Read between two equal reads of buddyinfo, the KPF_BUDDY pages are
    # exactly the pages of the blocks it counts.  Fewer would mean a
    # kernel that flags only the heads: then flagless pages would be
    # ambiguous, and this test would have to learn the blocks' orders.
    if res["guest_free"] != res["buddy_pages"]:
        failures.append(f"{res['guest_free']} KPF_BUDDY pages but "
                        f"{res['buddy_pages']} in buddyinfo's blocks")
    if not snap["ready"]:
        failures.append("the guest's free blocks changed between the "
                        "scan and the snapshot")
    return failures


def check_free(res):
    """Failures of the host's figures against the guest's."""
    failures = []
    if res["precision"] < MIN_PRECISION:
        failures.append(f"precision {res['precision']:.5f} < "
                        f"{MIN_PRECISION}")
    if res["recall"] < MIN_RECALL:
        failures.append(f"recall {res['recall']:.5f} < {MIN_RECALL}")
    # The host's free total against /proc/buddyinfo (the free lists'
    # own counts).  Per-CPU free lists are counted by neither (the
    # kernel takes pages off the free lists and NR_FREE_PAGES when it
    # moves them there), so they make no difference: the host does not
    # find less for not walking them.  With the guest quiet and unchanged
    # since the scan the totals agree exactly; the slack is MAX_OFF's.
    tol = res["tol"] = max(1, int(MAX_OFF * res["buddy_pages"]))
    diff = res["called_free"] - res["buddy_pages"]
    if abs(diff) > tol:
        failures.append(f"host free {res['called_free']} pages, buddyinfo "
                        f"{res['buddy_pages']}: off by {diff} > {tol}")
    # MemFree is NR_FREE_PAGES as the global vmstat counter has it: each
    # CPU may hold up to its zone's threshold of changes back from it
    # (the sum of the thresholds of /proc/zoneinfo).
    res["memfree_tol"] = tol + res["threshold"]
    diff = res["called_free"] - res["memfree_pages"]
    if abs(diff) > res["memfree_tol"]:
        failures.append(f"host free {res['called_free']} pages, MemFree "
                        f"{res['memfree_pages']}: off by {diff} > "
                        f"{res['memfree_tol']}")
    return failures


def check_cost(small, large):
    """Linear scan cost: per GiB, the larger guest's best scan within
    MAX_COST_RATIO of the smaller one's.  small and large are
    (scanned bytes, [scan-time us]).  Best of several, interleaved, so
    that the machine's noise hits both alike and is mostly filtered."""
    per = [min(t) / (b / (1 << 30)) for b, t in (small, large)]
    ratio = per[1] / per[0] if per[0] else float("inf")
    fail = []
    if not ratio <= MAX_COST_RATIO:
        fail.append(f"scan cost {per[1]:.0f} us/GiB at "
                    f"{large[0] >> 20} MiB is {ratio:.2f}x that at "
                    f"{small[0] >> 20} MiB ({per[0]:.0f} us/GiB) > "
                    f"{MAX_COST_RATIO}x: not linear")
    return per, ratio, fail


def report(run, shift=0, cost=1.0):
    """Print the figures of a run (a dict, as --save writes it) and
    return its failures; shift and cost corrupt it (the host's ranges
    moved by shift pages, the larger guest's scan times multiplied by
    cost) to show that the checks can fail."""
    snap = parse_snapshot(run["console"])
    info = run["info"]
    res = compare(snap, info["ranges"], shift)
    small = (info["scanned-bytes"], run["times"])
    large = (run["info2"]["scanned-bytes"],
             [int(t * cost) for t in run["times2"]])
    per, ratio, cost_fail = check_cost(small, large)
    failures = check_snapshot(snap, res) + check_free(res) + cost_fail
    mi = snap["meminfo"]
    c = res["called"]

    print(f"kernel        {info['kernel']} (booted {run['booted']}), KASLR "
          f"offset {info['kaslr-offset']:#x}")
    print(f"scan          {info['scanned-bytes'] >> 20} MiB of RAM, "
          f"{info['free-ranges']} ranges, {info['free-blocks']} blocks, "
          f"{info['rejected-blocks']} rejected")
    for (b, t), p, g in ((small, per[0], info), (large, per[1],
                                                  run["info2"])):
        print(f"scan time     {b >> 20:5} MiB: {min(t)} us best, "
              f"{sorted(t)[len(t) // 2]} us median of {len(t)} "
              f"({p:.0f} us/GiB; {g['free-bytes'] * 100 // b}% free)")
    print(f"scan cost     {ratio:.2f}x per GiB at the larger size "
          f"(linear: <= {MAX_COST_RATIO}x)")
    if shift or cost != 1.0:
        print(f"CORRUPTED     host ranges moved by {shift} pages, larger "
              f"guest's scan times x{cost}")
    print(f"free (host)   {res['called_free']} pages "
          f"({res['called_free'] * PAGE >> 20} MiB)")
    print(f"free (guest)  buddyinfo {res['buddy_pages']} pages in "
          f"{sum(res['buddy_blocks'])} blocks, MemFree "
          f"{res['memfree_pages']}, {snap['pcp']} on per-CPU lists "
          f"(in neither); snapshot after {snap['reads']} read(s), "
          f"{'unchanged' if snap['ready'] else 'CHANGED'} since the scan")
    print(f"free (kpf)    {res['guest_free']} KPF_BUDDY pages "
          f"({'=' if res['guest_free'] == res['buddy_pages'] else '!='} "
          f"buddyinfo); {res['flagless']} flagless pages, in no free "
          f"block: {snap['pcp']} per-CPU, VmallocUsed "
          f"{mi.get('VmallocUsed', 0) // PAGE}, "
          f"{res['flagless'] - snap['pcp'] - mi.get('VmallocUsed', 0) // PAGE}"
          f" other")
    print(f"precision     {res['precision']:.5f} ({res['called_in_use']} "
          f"pages called free are not: {c['U']} flagged, {c['N']} "
          f"flagless, {c['X'] + res['called_beyond']} no page)")
    print(f"recall        {res['recall']:.5f} of the KPF_BUDDY pages; host "
          f"total {res['called_free'] / res['buddy_pages']:.5f} of "
          f"buddyinfo's ({res['called_free'] - res['buddy_pages']:+d}, "
          f"tolerance {res['tol']}), "
          f"{res['called_free'] / res['memfree_pages']:.5f} of MemFree "
          f"(tolerance {res['memfree_tol']})")
    print("hmp           " + run["hmp"].strip().replace("\n",
                                                       "\n              "))

    if info["kernel"] != run["booted"]:
        failures.append(f"recognised {info['kernel']}, booted "
                        f"{run['booted']}")
    for f in failures:
        print(f"FAIL: {f}")
    print(f"vmi-validate {info['kernel']}: "
          f"{'FAILED' if failures else 'passed'}")
    return failures


def run_guests(args):
    """Boot, exercise and scan the guests; the raw figures as a dict."""
    pkg = args.kernel_pkg
    if pkg:
        sm.log(f"kernel: {pkg}")
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
    # The second guest, for the scan cost at another size, boots
    # meanwhile; it only has to be up when the first one is done.
    vm2 = sm.Vm("vmi2", wdir, args.mem2, kit=kit, extra=extra)
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

    # The comparison needs a guest that stayed quiet from the scan to
    # the snapshot.  A 6.1 guest's own background work (vmstat and
    # per-CPU list drains, a kworker's allocation) now and then moves a
    # block in that second; then the snapshot is not the state the host
    # scanned, and the round is taken again, up to SNAPSHOT_TRIES times.
    for attempt in range(1, SNAPSHOT_TRIES + 1):
        con.mark()
        con.send("kpagedump snapshot")
        con.wait(r"^kpagedump: ready$", timeout=60)
        time.sleep(0.5)         # let the shell and console go idle
        info = qmp.cmd("query-guest-free-memory", profiles=profdir,
                       ranges=True)
        con.send("")
        m = con.wait(r"^kpagedump: end runs=\d+$", timeout=300)
        console = con.buf[con.buf.rfind("kpagedump: begin", 0,
                                        m.end()):m.end()]
        if parse_snapshot(console)["ready"]:
            break
        sm.log(f"snapshot {attempt}: the guest's free blocks changed "
               "after the scan; again")

    vm2.serial.wait(r"splitmem-guest: up, kernel", timeout=180)
    sm.log(f"second guest up: {args.mem2} MiB")
    times, times2 = [info["scan-time"]], []
    info2 = None
    for _ in range(args.scans):
        times.append(qmp.cmd("query-guest-free-memory",
                             profiles=profdir)["scan-time"])
        info2 = vm2.qmp.cmd("query-guest-free-memory", profiles=profdir)
        times2.append(info2["scan-time"])
    hmp = qmp.hmp(f"info guest_free_memory {profdir}")
    vm.quit()
    vm2.quit()
    return {"booted": booted, "console": console, "info": info,
            "times": times, "info2": info2, "times2": times2, "hmp": hmp}


def self_test():
    """compare() and the checks on synthetic data: right answers pass,
    wrong ones fail.  Returns the number of wrong verdicts."""
    rnd = random.Random(8)
    max_order = 10
    classes = bytearray(b"U" * 4096)          # the low 16 MiB in use
    blocks, flagless = [], []
    while len(classes) < 65536:
        pfn = len(classes)
        kind = rnd.random()
        order = min(rnd.randrange(max_order + 1),
                    (pfn & -pfn).bit_length() - 1)
        if kind < 0.4:                          # a free block
            blocks.append((pfn, order))
            classes += b"B" * (1 << order)
        elif kind < 0.5:                        # vmalloc, per-CPU lists
            flagless.append(pfn)
            classes += b"N"
        else:
            classes += b"U" * (1 << order)
    counts = [0] * (max_order + 1)
    for _, o in blocks:
        counts[o] += 1
    free = sum(1 << o for _, o in blocks)
    snap = {"classes": classes, "buddyinfo": [("Normal", counts)],
            "meminfo": {"MemFree": free * PAGE},
            "pcp": 0, "threshold": 0, "reads": 1, "ready": True}
    truth = [{"start": p * PAGE, "length": (1 << o) * PAGE}
             for p, o in blocks]
    bad = verdicts = 0

    # One TAP line per verdict, so that make check counts them.
    def expect(name, ok, got):
        nonlocal bad, verdicts
        verdicts += 1
        print(f"{'ok' if ok else 'not ok'} {verdicts} - {name} ({got})")
        bad += not ok

    def verdict(snap, ranges, shift=0):
        res = compare(snap, ranges, shift)
        return res, check_snapshot(snap, res) + check_free(res)

    res, fails = verdict(snap, truth)
    expect("the guest's own blocks pass", not fails and
           res["precision"] == 1.0 and res["recall"] == 1.0,
           fails or f"{free} pages")
    for shift in (1, 4, -4):
        res, fails = verdict(snap, truth, shift)
        expect(f"ranges moved by {shift} fail",
               res["precision"] < MIN_PRECISION and fails,
               f"precision {res['precision']:.5f}")
    # Flagless pages called free: within the slack, and just beyond it.
    slack = int(MAX_OFF * free)
    for n, want in ((slack, True), (slack + 1, False)):
        res, fails = verdict(snap, truth + [
            {"start": p * PAGE, "length": PAGE} for p in flagless[:n]])
        expect(f"{n} flagless pages called free "
               f"{'pass' if want else 'fail'}", (not fails) == want,
               f"precision {res['precision']:.5f}")
    # Missed blocks: recall and the buddyinfo total.
    res, fails = verdict(snap, [r for r in truth if r["length"] < 1 << 20])
    expect("the largest blocks missed fail", bool(fails),
           f"recall {res['recall']:.3f}")
    # One largest block more than the guest has, somewhere in use.
    used = classes.index(b"U" * 1024, 4096)
    res, fails = verdict(snap, truth + [{"start": used * PAGE,
                                         "length": 1 << 22}])
    expect("one block in use called free fails", bool(fails),
           f"precision {res['precision']:.5f}")
    # Snapshots that cannot be judged.
    snap2 = dict(snap, buddyinfo=[("Normal", counts[:-1] + [counts[-1] + 1])])
    res, fails = verdict(snap2, truth)
    expect("buddyinfo not matching the flags fails", bool(fails), fails)
    snap2 = dict(snap, ready=False)
    res, fails = verdict(snap2, truth)
    expect("a guest that changed since the scan fails", bool(fails), fails)
    gib = 1 << 30
    lin = check_cost((gib // 2, [600, 700]), (2 * gib, [2500, 2600]))
    quad = check_cost((gib // 2, [600, 700]), (2 * gib, [9000, 9500]))
    expect("linear cost passes", not lin[2], f"{lin[1]:.2f}x")
    expect("quadratic cost fails", bool(quad[2]), f"{quad[1]:.2f}x")
    print(f"1..{verdicts}")
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel-pkg", help="the guest's kernel: a role of "
                    "guest/kernels ('trixie': the newest Debian 13 kernel) "
                    "or a linux-image package (default: role 'default')")
    ap.add_argument("--mem", type=int, default=768, help="guest MiB")
    ap.add_argument("--mem2", type=int, help="MiB of the second guest, for "
                    "the scan cost (default: 4 times --mem)")
    ap.add_argument("--scans", type=int, default=15,
                    help="scans of each guest for the timing figures")
    ap.add_argument("--save", metavar="FILE", help="write the raw figures")
    ap.add_argument("--replay", metavar="FILE", help="judge the figures of "
                    "a --save run instead of booting guests")
    ap.add_argument("--corrupt-shift", type=int, default=0, metavar="PAGES",
                    help="move the host's ranges (the test must fail)")
    ap.add_argument("--corrupt-cost", type=float, default=1.0,
                    metavar="FACTOR", help="multiply the larger guest's "
                    "scan times (the test must fail beyond 2)")
    ap.add_argument("--self-test", action="store_true",
                    help="judge synthetic right and wrong answers")
    args = ap.parse_args()
    args.mem2 = args.mem2 or 4 * args.mem

    if args.self_test:
        bad = self_test()
        print(f"vmi-validate self-test: {'FAILED' if bad else 'passed'}")
        return 1 if bad else 0
    if args.replay:
        with open(args.replay) as f:
            run = json.load(f)
    else:
        t0 = time.monotonic()
        run = run_guests(args)
        sm.log(f"guests done in {time.monotonic() - t0:.0f} s")
        if args.save:
            with open(args.save, "w") as f:
                json.dump(run, f)
    return 1 if report(run, args.corrupt_shift, args.corrupt_cost) else 0


if __name__ == "__main__":
    sys.exit(main())
