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
The guest does not dirty memory during the runs, so both migrations
move the same data and the ratios measure the mechanism, not the load.
"""

import argparse
import os
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
    args = ap.parse_args()
    args.kit = sm.guest_kit()

    plain, plain_tx = run(args, split=False)
    split, split_tx = run(args, split=True)
    s = split["split"]
    total_pages = split["ram"]["total"] // 4096
    nonzero = (total_pages - s["unused-pages"]) * 4096
    t_plain, t_split = plain["total-time"], split["total-time"]
    print(f"split-migration bench: guest {args.mem} MiB, {args.fill} MiB filled,"
          f" link {args.rate} per host, accel {sm.ACCEL}")
    print(f"  plain precopy  time {t_plain:7d} ms  wire {plain_tx / MiB:8.1f} MiB")
    print(f"  split          time {t_split:7d} ms  wire {split_tx / MiB:8.1f} MiB"
          f"  (main {s['destinations'][0]['placed']} pages, "
          + ", ".join(f"{d['destination']} {d['placed']}"
                      for d in s["destinations"][1:]) + ")")
    print(f"  guest non-zero RAM {nonzero / MiB:.1f} MiB")
    print(f"  ratio time  split/plain      {t_split / t_plain:.3f}  (target <= 1.20)")
    print(f"  ratio bytes split/non-zero   {split_tx / nonzero:.3f}  (target <= 1.05)")
    print(f"  ratio bytes plain/non-zero   {plain_tx / nonzero:.3f}  (reference)")


if __name__ == "__main__":
    main()
