#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Benchmark: split migration against QEMU's own precopy, side by side.

One run, one guest image, the same shaped link (tc netem rate on every
host's side of the segment, default 1gbit): first QEMU's plain precopy
to one main host with enough memory, then a split migration onto a main
host (half the guest's RAM as budget) and two sub-hosts. TLS on every
channel in both. Prints, each beside its reference:
  - migration time, split / plain            (target: <= 1.2)
  - bytes the source put on the wire (its veth tx counter, so TCP, TLS
    and NBD framing included) / the guest's non-zero RAM (target: <= 1.05)
  - the downtime of every run beside downtime-limit (target: within it;
    split's map delta and sub-host write drain are in QEMU's pending
    estimate, so the switchover waits until they fit)
The guest does not dirty memory during the runs, so both migrations
move the same data and the ratios measure the mechanism, not the load.
The two kinds of run alternate (--rounds pairs, default 3) and the
ratios are of medians, since these machines are shared and noisy.
"""

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "lib"))
import splitmem as sm  # noqa: E402
from scenario import Scenario  # noqa: E402

MiB = 1 << 20


def run(args, split):
    sc = Scenario(args.mem, args.fill, 0, subhosts=2 if split else 0,
                  rate=args.rate, log=lambda m: None, kit=args.kit)
    sc.boot_source()
    tx0 = sc.lan.tx_bytes(sc.src_ns)
    info = sc.migrate(split=split, budget=(args.mem // 2) * MiB)
    tx = sc.lan.tx_bytes(sc.src_ns) - tx0
    info["downtime-limit"] = sc.src.qmp.cmd(
        "query-migrate-parameters")["downtime-limit"]
    sc.quit_source()
    ok, line = sc.verify_on_main()
    if not ok:
        sys.exit(f"bench: guest memory corrupted: {line}")
    sc.main.quit()
    return info, tx


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mem", type=int, default=1024, help="guest RAM, MiB")
    ap.add_argument("--fill", type=int, default=512, help="memfill MiB")
    ap.add_argument("--rate", default="1gbit", help="tc rate per host")
    ap.add_argument("--rounds", type=int, default=3,
                    help="pairs of runs (plain, split), alternated")
    args = ap.parse_args()
    args.kit = sm.guest_kit()

    rounds = {False: [], True: []}
    for _ in range(args.rounds):
        for split in (False, True):
            rounds[split].append(run(args, split))
    med = {k: statistics.median(i["total-time"] for i, _ in v)
           for k, v in rounds.items()}
    wire = {k: statistics.median(tx for _, tx in v) for k, v in rounds.items()}
    split = rounds[True][-1][0]
    s = split["split"]
    total_pages = split["ram"]["total"] // 4096
    nonzero = (total_pages - s["unused-pages"]) * 4096
    print(f"split-migration bench: guest {args.mem} MiB, {args.fill} MiB filled,"
          f" link {args.rate} per host, accel {sm.ACCEL}, {args.rounds} rounds")
    for k, name in ((False, "plain precopy"), (True, "split        ")):
        times = " ".join(f"{i['total-time']}" for i, _ in rounds[k])
        print(f"  {name}  time median {med[k]:7.0f} ms (runs: {times})"
              f"  wire {wire[k] / MiB:8.1f} MiB")
    print(f"  split placement: main {s['destinations'][0]['placed']} pages, "
          + ", ".join(f"{d['destination']} {d['placed']}"
                      for d in s["destinations"][1:]))
    print(f"  guest non-zero RAM {nonzero / MiB:.1f} MiB")
    for k, name in ((False, "plain precopy"), (True, "split        ")):
        downs = [i.get("downtime", 0) for i, _ in rounds[k]]
        limit = rounds[k][0][0]["downtime-limit"]
        met = all(d <= limit for d in downs)
        print(f"  downtime {name} {' '.join(f'{d}' for d in downs)} ms"
              f"  limit {limit} ms  ({'met' if met else 'NOT met'})")
    print(f"  ratio time  split/plain      {med[True] / med[False]:.3f}"
          "  (target <= 1.20)")
    print(f"  ratio bytes split/non-zero   {wire[True] / nonzero:.3f}"
          "  (target <= 1.05)")
    print(f"  ratio bytes plain/non-zero   {wire[False] / nonzero:.3f}"
          "  (reference)")


if __name__ == "__main__":
    main()
