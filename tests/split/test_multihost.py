#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Split migration of a running Linux guest across four hosts.

Source, main host and two sub-hosts in network namespaces; TLS on every
channel. The guest fills several hundred MiB with memfill's pattern and
keeps dirtying part of it; it has the devices of a cloud VM (2 vCPUs,
virtio blk/net/rng/balloon: tests/lib/scenario.py) and keeps its disk
and network busy. After the split migration it verifies every byte on
the main host. Asserts what split migration promises:
  - the guest's own verification passes on the main host;
  - pages went to both sub-hosts, and remote page-ins really happened;
  - the main host's resident guest memory at start stayed within its
    budget (the pager's count and the QEMU process's RSS);
  - the sub-host processes really hold memory (RSS);
  - every device works on the main host (devcheck: disk read-back from
    both queues, pings, rng bytes, balloon bound) and QEMU printed no
    virtio error there.
tests/split/test_devices.py covers idle rings placed on sub-hosts.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import splitmem as sm  # noqa: E402
from scenario import Scenario  # noqa: E402

MEM, FILL, BUDGET = 1024, 512, 320
MiB = 1 << 20
check, failures = sm.check, sm.failures


def main():
    sc = Scenario(MEM, FILL, dirty_mibs=2, subhosts=2)
    sc.boot_source()
    info = sc.migrate(split=True, budget=BUDGET * MiB)
    split = info["split"]
    dest = {d["destination"]: d for d in split["destinations"]}
    sm.log(f"migrated in {info['total-time']} ms: " + ", ".join(
        f"{k} {v['placed']} pages" for k, v in dest.items()))
    sc.quit_source()

    s0 = sc.main.qmp.cmd("query-split-memory")
    page = s0["page-size"]
    check(s0["active"], "the main host runs a split-memory VM")
    check(s0["resident-pages-at-start"] * page <= BUDGET * MiB,
          f"resident at start {s0['resident-pages-at-start'] * page >> 20} MiB"
          f" <= budget {BUDGET} MiB")
    for sh in ("sub1", "sub2"):
        check(dest[sh]["placed"] > 0, f"{sh} holds pages ({dest[sh]['placed']})")
    # The guest's pattern is about FILL MiB of non-zero pages; at most the
    # budget of it can be on the main host, so the rest must be remote.
    remote = sum(dest[sh]["placed"] for sh in ("sub1", "sub2")) * page
    check(remote >= (FILL - BUDGET) * MiB,
          f"{remote >> 20} MiB on sub-hosts >= {FILL - BUDGET} MiB")
    rss = sc.main.rss_bytes()
    # QEMU's own memory (TCG translation cache, heap) is well under 256 MiB.
    check(rss <= (BUDGET + 256) * MiB,
          f"main host QEMU RSS {rss >> 20} MiB <= budget + 256 MiB")
    for sh in sc.subhosts:
        check(sh.rss_bytes() >= 32 * MiB,
              f"{sh.name} nbdkit RSS {sh.rss_bytes() >> 20} MiB holds pages")

    ok, line = sc.verify_on_main()
    sm.log(f"guest: {line}")
    check(ok, "the guest verified every byte on the main host")
    s1 = sc.main.qmp.cmd("query-split-memory")
    check(s1["page-ins-remote"] > 0,
          f"remote page-ins happened ({s1['page-ins-remote']}, "
          f"p50 {s1['latency-p50']} us, p99 {s1['latency-p99']} us)")
    check(s1["blocked-faults"] == 0, "no fault is blocked")
    ok, line = sc.devcheck_on_main(timeout=120)
    sm.log(f"guest: {line}")
    check(ok, "every device works on the main host")
    errs = sc.virtio_errors()
    check(not errs, "no virtio error on the main host's stderr"
          + "".join(f"\n         {e}" for e in errs[:5]))
    sc.main.quit()
    if failures:
        sys.exit(f"test_multihost: {len(failures)} check(s) failed")
    sm.log("test_multihost: passed")


if __name__ == "__main__":
    main()
