#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Split migration of a guest with the devices of a cloud VM (issue 9).

The guest has 2 vCPUs, virtio-blk on a disk image both hosts open,
virtio-net (tap), virtio-rng and virtio-balloon (stats polling, free
page reporting). One queue of each device is used once before the
migration and then left idle (blk queue 1, net's control queue, the rng,
the balloon's inflate and deflate queues), and the main host's budget is
small enough that their ring pages are placed on a sub-host. Asserts:
  1. every device has an idle queue with a ring page that the source
     placed on a sub-host (x-query-virtio-queue-status addresses, looked
     up with x-query-split-page-locations on the main host); the
     migration starts in a pause of the guest kernel's hwrng thread
     (RNG_QUIET_S), and should the source's rng queue indices show a
     read during the migration anyway, that is logged and the rng's
     placement is not asserted;
  2. while the migration loads, the main host's guest-RAM mapping stays
     within budget + OVERHEAD (RSS sampled every 50 ms) and never holds
     a transparent huge page (AnonHugePages == 0 in every sample);
  3. with both vCPUs busy (memfill verifying on one, device load on
     CPU 0), the monitor reads pages that are still on a sub-host
     (xp): each reads what the source held there, and is not all zero;
  4. on the main host every device works (devcheck: disk slots written
     on both hosts read back, from both queues; pings answered; rng
     bytes from virtio_rng; balloon bound), the balloon's stats update,
     memfill verifies every byte, and QEMU printed no virtio error;
  5. memory the guest gives back while its pages are on a sub-host is
     discarded there: a scratch memfill (SCRATCH_MIB, started on the
     source before the migration, so its non-zero pages are placed
     remotely) is killed on the main host, free page reporting hands its
     freed blocks to the balloon, and a balloon inflate by BALLOON_MIB
     and deflate follow; then 'discarded-pages' grew by at least
     DISCARD_FRACTION of the scratch pages, the sub-hosts' page count
     fell by at least as many beyond the pages they served (per-sub-host
     'page-ins') and put back by page-out ('page-outs',
     'clean-drops'), and memory and devices are intact.
--quick (make check) and the full form (make bench) differ in the
guest's size only.
"""

import argparse
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import splitmem as sm  # noqa: E402
from scenario import Scenario  # noqa: E402

MiB = 1 << 20
PAGE = 4096
# The source's first pass places the pages it has not seen written in
# address order, the main host's share first; the drivers' rings sit in
# the guest's low memory (about 25-48 MiB here), above 20+ MiB of other
# non-zero pages. A budget of 16 MiB (12 MiB for those first-pass pages,
# a quarter kept for hot ones) puts the idle rings on a sub-host.
BUDGET_MIB = 16
# Allowed above the budget in the guest-RAM mapping while loading: pages
# the main host received and installed before the source moved them to a
# sub-host or found them zero again stay until the discard before the
# guest runs; the pager's own page-ins while devices load (ring pages,
# a few dozen); 2 MiB of rounding. Measured peaks are logged.
OVERHEAD_MIB = 8
BALLOON_MIB = 128
# The scratch memfill whose memory the guest gives back on the main host.
SCRATCH_MIB = 96
SCRATCH_PAGES = SCRATCH_MIB * MiB // PAGE
# At least this share of the scratch pages must be discarded on their
# sub-host. At most BUDGET_MIB of them can be resident, so >= 80 of the
# 96 MiB (83 %) are remote at switchover, and nothing touches them until
# the kill. Free page reporting hands over only whole free 2 MiB blocks
# (a block the scratch shared with a live allocation is not reported),
# and the guest may reuse a freed page before it is reported: 3/4 leaves
# room for those (measured: 97 % of the scratch discarded), and fails a
# hook that misses one of the two sub-hosts (about 1/2). The balloon's
# inflate adds nothing on Debian's kernel: init_on_alloc zeroes each
# page the driver takes, which pages a remote page in before the
# balloon discards it.
DISCARD_FRACTION = 0.75
# Free page reporting runs 2 s after a free; it reports a share of each
# free list per run, so it may take several runs.
REPORT_SETTLE_S, REPORT_TIMEOUT_S = 6, 60
IDLE = {"blk": [1], "net": [2], "rng": [0], "balloon": [0, 1]}
# The rng's queue is not idle on its own: since Linux 5.18 (the kit's
# 6.1 included) the kernel's hwrng thread runs even at quality 0 (which
# only stops crediting entropy; guest/devices sets it), and it reads the
# rng, one request on queue 0, every crng reseed interval: uptime / 2
# during the first 120 s of uptime (reads at about 11, 17, 25, 37, 55,
# 83 s), then 60 s. Nothing in 6.1 stops it short of unbinding the
# driver, which frees the rings. A migration started 15 s into uptime
# overlaps a read or two; a read there dirties both ring pages, and the
# pass after it places them on the main host (one run in two). So the
# migration starts right after one of its reads, once the gap before
# that read was at least RNG_QUIET_S: the intervals only grow, so the
# next read is at least as far away (about 28 s for 15 s; the quick
# migration takes 10-15 s); waiting for it costs about 40 s. The
# source's queue indices before and after the migration show whether it
# stayed idle.
RNG_QUIET_S = {True: 15, False: 40}     # by --quick
RNG_MAX_INTERVAL_S = 60                 # the kernel's CRNG_RESEED_INTERVAL
check, failures = sm.check, sm.failures


class RamSampler(threading.Thread):
    """Samples the guest-RAM mapping's Rss and AnonHugePages of the main
    host's QEMU every 50 ms while its incoming migration has not
    completed (asked on a monitor of its own), and keeps the peaks. The
    guest runs right after completion: what it pages in then is not the
    load's."""

    def __init__(self, vm, size, qmp_path):
        super().__init__(daemon=True)
        self.vm, self.range = vm, vm.ram_range(size)
        self.qmp = sm.QMP(qmp_path)
        self.peak_rss = self.peak_huge = self.samples = 0
        self.status = None
        self.error = None

    def run(self):
        try:
            while True:
                self.status = self.qmp.cmd("query-migrate").get("status")
                if self.status in ("completed", "failed", "cancelled"):
                    break
                rss, huge = self.vm.ram_usage(self.range)
                self.samples += 1
                self.peak_rss = max(self.peak_rss, rss)
                self.peak_huge = max(self.peak_huge, huge)
                time.sleep(0.05)
        except (OSError, sm.QMPError) as exc:
            self.error = exc
        self.qmp.close()


def ring_pages(queues):
    """{kind: {queue: set of page GPAs of its desc, avail, used rings}}"""
    return {kind: {q: {a & ~(PAGE - 1) for a in rings.values()}
                   for q, rings in qs}
            for kind, qs in queues.items()}


def rng_indices(vm):
    """(last-avail-idx, used-idx) of the rng's queue 0 on vm."""
    for dev in vm.qmp.cmd("x-query-virtio"):
        if sm.VIRTIO_NAMES.get(dev["name"]) == "rng":
            qs = vm.qmp.cmd("x-query-virtio-queue-status", path=dev["path"],
                            queue=IDLE["rng"][0])
            return qs["last-avail-idx"], qs["used-idx"]
    raise RuntimeError(f"{vm.name}: no virtio-rng in x-query-virtio")


def wait_rng_quiet(src, quiet_s):
    """Return right after the guest kernel's hwrng thread read the rng,
    once that read came at least quiet_s after the one before it (see
    RNG_QUIET_S), or when no read came for longer than the kernel's
    longest interval (a kernel whose thread stops at quality 0)."""
    t0 = time.monotonic()
    idx, reads = rng_indices(src), []
    while True:
        time.sleep(0.1)
        now, cur = time.monotonic(), rng_indices(src)
        if cur[1] != idx[1]:
            reads.append(now)
            if len(reads) >= 2 and reads[-1] - reads[-2] >= quiet_s:
                break
        elif now - (reads[-1] if reads else t0) > RNG_MAX_INTERVAL_S + 5:
            break
        idx = cur
    gaps = [f"{b - a:.1f}" for a, b in zip(reads, reads[1:])]
    sm.log(f"  rng: the guest's hwrng thread read it {len(reads)} times in "
           f"{time.monotonic() - t0:.0f} s (gaps {', '.join(gaps) or '-'} "
           f"s); migrating now, used-idx {cur[1]}")


def check_rings_remote(main, rng_used):
    """Assertion 1; rng_used: the source's rng queue indices changed
    during the migration (then its ring pages were rightly hot)."""
    pages = ring_pages(main.virtio_queues())
    idle = {kind: set().union(*(pages[kind][q] for q in IDLE[kind]))
            for kind in IDLE if kind in pages}
    check(set(idle) == set(IDLE), f"devices found: {sorted(pages)}")
    loc = main.page_locations(sorted(set().union(*idle.values())))
    for kind, gpas in sorted(idle.items()):
        where = {g: loc[g]["location"] + (f"/{loc[g]['subhost']}"
                                          if "subhost" in loc[g] else "")
                 for g in sorted(gpas)}
        sm.log(f"  {kind} idle queues {IDLE[kind]}: " + ", ".join(
            f"{g:#x} {w}" for g, w in where.items()))
        if kind == "rng" and rng_used:
            sm.log(f"  NOTE rng: queue {IDLE['rng']} was used during the "
                   f"migration (source last-avail-idx, used-idx {rng_used[0]}"
                   f" -> {rng_used[1]}): its ring pages were dirtied, their "
                   f"placement is not asserted")
            continue
        check(any(loc[g]["location"] == "subhost" for g in gpas),
              f"{kind}: an idle queue's ring page was placed on a sub-host")


def check_monitor_reads(sc, mem_mib):
    """Assertion 3: read remote, not-present pages through the monitor
    while the guest runs and compare with the (paused) source."""
    grid = [a for a in range(0x100000 + 0x3000, mem_mib * MiB, 256 * 1024)]
    loc = sc.main.page_locations(grid)
    remote = [g for g in grid if loc[g]["location"] == "subhost"
              and not loc[g]["present"]]
    sm.log(f"  {len(remote)} of {len(grid)} sampled pages remote and absent")
    picked, same, nonzero = remote[::max(1, len(remote) // 24)][:24], 0, 0
    # Both vCPUs fault too: memfill verifies every page meanwhile.
    sc.main.serial.mark()
    sc.main.serial.send("kill -USR1 $(cat /run/memfill.pid)")
    for g in picked:
        want, got = sc.src.xp(g), sc.main.xp(g)
        same += want == got
        # xp shows a page's first 32 bytes only: zero where the source's are
        nonzero += any(got) or not any(want)
        if want != got:
            sm.log(f"  {g:#x}: source {want} main {got}")
    check(picked and same == len(picked),
          f"monitor reads of {len(picked)} remote pages match the source"
          f" ({same} match)")
    check(nonzero == len(picked) and any(any(sc.src.xp(g)) for g in picked),
          f"and are not zero where the source's are not ({nonzero})")
    m = sc.main.serial.wait(r"memfill: verify (OK|FAILED)[^\n]*\n", 900)
    check(m.group(1) == "OK", f"guest: {m.group(0).strip()} (during xp)")


def check_devices(sc, when):
    ok, line = sc.devcheck_on_main(timeout=120)
    sm.log(f"  guest: {line}")
    check(ok, f"every device works on the main host {when}")
    ok, line = sc.verify_on_main()
    sm.log(f"  guest: {line}")
    check(ok, f"the guest verified every byte {when}")


def check_balloon_stats(main):
    t0 = main.guest_stats()["last-update"]
    new = sm.wait_for(lambda: main.guest_stats()["last-update"] > t0
                      and main.guest_stats(), 30,
                      "the balloon stats to update", interval=1)
    check(bool(new), f"balloon stats update on the main host "
          f"(free {new['stats']['stat-free-memory'] >> 20} MiB)")


def start_scratch(src):
    """On the source, before the migration: a second memfill that fills
    SCRATCH_MIB and then leaves its pages alone (no re-writes)."""
    src.serial.mark()
    src.serial.send(f"memfill -m {SCRATCH_MIB} -s 2 -p /run/scratch.pid &")
    m = src.serial.wait(rf"memfill: ready {SCRATCH_MIB} MiB[^\n]*\n", 300)
    sm.log(f"  guest: scratch {m.group(0).strip()}")


def split_counts(main):
    """(sub-host pages, their page-ins in pages, discarded-pages, pages
    page-out put back on the sub-hosts)."""
    s = main.qmp.cmd("query-split-memory")
    return (sum(h["pages"] for h in s["subhosts"]),
            sum(h["page-ins"] for h in s["subhosts"]),
            s.get("discarded-pages", 0),
            s.get("page-outs", 0) + s.get("clean-drops", 0))


def wait_reported(main, since):
    """Wait until the main host's discards stop growing: free page
    reporting (every 2 s) has handed over what the kill freed."""
    t0 = last_t = time.monotonic()
    last = since
    while time.monotonic() - t0 < REPORT_TIMEOUT_S:
        time.sleep(1)
        now = split_counts(main)[2]
        if now != last:
            last, last_t = now, time.monotonic()
        elif time.monotonic() - last_t >= REPORT_SETTLE_S:
            break
    return last, time.monotonic() - t0


def check_balloon(sc, mem_mib):
    """Assertion 5."""
    free = sc.main.guest_stats()["stats"]["stat-free-memory"]
    check("discarded-pages" in sc.main.qmp.cmd("query-split-memory"),
          "the main host counts discarded-pages")
    c0 = split_counts(sc.main)
    # SIGKILL: memfill's SIGTERM would verify, paging every page in.
    sc.main.serial.send("kill -KILL $(cat /run/scratch.pid)")
    reported, waited = wait_reported(sc.main, c0[2])
    sm.log(f"  scratch killed (guest free {free >> 20} MiB before); after "
           f"{waited:.0f} s discarded-pages {c0[2]} -> {reported}")
    c1 = split_counts(sc.main)
    sc.main.balloon_to((mem_mib - BALLOON_MIB) * MiB)
    sm.log(f"  balloon inflated by {BALLOON_MIB} MiB")
    sc.main.balloon_to(mem_mib * MiB)
    sm.log("  balloon deflated")
    c2 = split_counts(sc.main)
    for what, a, b in (("kill + reporting", c0, c1), ("inflate + deflate",
                                                      c1, c2)):
        sm.log(f"  {what}: sub-host pages {a[0]} -> {b[0]}, served "
               f"{b[1] - a[1]} pages, discarded-pages {a[2]} -> {b[2]}")
    want = int(SCRATCH_PAGES * DISCARD_FRACTION)
    discarded = c2[2] - c0[2]
    # A page leaves its sub-host's count when it is paged in or when it
    # is discarded, and comes back when it is paged out: what page-ins
    # and page-outs do not account for is the hook's.
    beyond = (c0[0] - c2[0]) - (c2[1] - c0[1]) + (c2[3] - c0[3])
    check(discarded >= want, f"discarded-pages grew by {discarded} >= "
          f"{DISCARD_FRACTION} of the {SCRATCH_PAGES} scratch pages ({want})")
    check(beyond >= want, f"the sub-hosts hold {c0[0] - c2[0]} pages fewer,"
          f" {beyond} beyond the {c2[1] - c0[1]} they served and the "
          f"{c2[3] - c0[3]} paged out (>= {want})")
    check_devices(sc, "after the balloon")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="the make check size (smaller guest)")
    args = ap.parse_args()
    mem, fill = (1024, 192) if args.quick else (2048, 1024)
    t_start = time.monotonic()
    sc = Scenario(mem, fill, dirty_mibs=1, subhosts=2, devices=True)
    sc.boot_source()
    # Use the balloon's inflate and deflate queues once, then leave them.
    sc.src.balloon_to((mem - 16) * MiB)
    sc.src.balloon_to(mem * MiB)
    start_scratch(sc.src)

    sampler, rng_before = [], []
    mon_args, mon_path = sm.extra_monitor(sc.wdir, "main")

    def start_sampling(vm):
        sampler.append(RamSampler(vm, mem * MiB, mon_path))
        sampler[0].start()
        rng_before.append(rng_indices(sc.src))

    wait_rng_quiet(sc.src, RNG_QUIET_S[args.quick])

    info = sc.migrate(split=True, budget=BUDGET_MIB * MiB,
                      main_started=start_sampling, main_extra=mon_args)
    smp = sampler[0]
    smp.join(60)
    # The source stopped at switchover: its indices are the final ones.
    rng_after = rng_indices(sc.src)
    rng_used = (rng_before[0], rng_after) if rng_after != rng_before[0] \
        else None
    sm.log(f"  rng queue {IDLE['rng']} on the source during the migration: "
           f"(last-avail-idx, used-idx) {rng_before[0]} -> {rng_after}")
    check(smp.status == "completed" and not smp.error,
          f"the main host's incoming migration: {smp.status} {smp.error or ''}")
    dest = {d["destination"]: d for d in info["split"]["destinations"]}
    sm.log(f"migrated in {info['total-time']} ms: " + ", ".join(
        f"{k} {v['placed']} pages" for k, v in dest.items()))
    sm.log(f"  loading: {smp.samples} samples, guest RAM peak RSS "
           f"{smp.peak_rss / MiB:.1f} MiB, AnonHugePages "
           f"{smp.peak_huge / MiB:.1f} MiB")
    check(smp.samples >= 5, "memory sampled while the migration loaded")
    check(smp.peak_rss <= (BUDGET_MIB + OVERHEAD_MIB) * MiB,
          f"peak guest RAM RSS while loading {smp.peak_rss / MiB:.1f} MiB <="
          f" budget {BUDGET_MIB} + {OVERHEAD_MIB} MiB")
    check(smp.peak_huge == 0, "no transparent huge page in guest RAM while "
          "loading")

    for step in (lambda: check_rings_remote(sc.main, rng_used),
                 lambda: check_monitor_reads(sc, mem)):
        try:
            step()
        except sm.QMPError as exc:  # e.g. a command the main host lacks
            check(False, f"QMP: {exc}")
    sc.quit_source()
    try:
        check_devices(sc, "after the migration")
        check_balloon_stats(sc.main)
        m = sc.main.serial.wait(r"^devload: round \d+ [^\n]*$", 60)
        check("FAILED" not in m.group(0), f"guest load after migration: "
              f"{m.group(0).strip()}")
        check_balloon(sc, mem)
    except TimeoutError as exc:
        # A dead device hangs the guest's I/O: the rest cannot run.
        check(False, "the guest stopped answering: "
              + str(exc).splitlines()[0])
    errs = sc.virtio_errors()
    check(not errs, "no virtio error on the main host's stderr"
          + "".join(f"\n         {e}" for e in errs[:5]))
    s = sc.main.qmp.cmd("query-split-memory")
    sm.log(f"  remote page-ins {s['page-ins-remote']}, local "
           f"{s['page-ins-local']}, p99 {s['latency-p99']} us")
    sc.main.quit()
    sm.log(f"test_devices: {time.monotonic() - t_start:.0f} s")
    if failures:
        sys.exit(f"test_devices: {len(failures)} check(s) failed")
    sm.log("test_devices: passed")


def run():
    try:
        main()
    except Exception:
        # QEMU's own words first: they say why a host went away.
        for vm in sm.live_vms():
            sm.log(f"--- {vm.name} (exit {vm.proc.poll()}) stderr:\n"
                   f"{vm.stderr_text()[-3000:]}")
        raise


if __name__ == "__main__":
    run()
