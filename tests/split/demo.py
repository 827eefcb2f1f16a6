#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""make demo: split-migrate a running Linux guest onto a main host and
two sub-hosts.

Four network namespaces on one switched segment: the source, the main
host, and two sub-hosts, each an nbdkit memory export for this VM behind
TLS (contrib/subhost/splitmem-subhost). The guest (Debian's stock kernel
under TCG) fills memory with memfill's pattern and keeps re-writing part
of it while the migration runs. The main host holds only its resident
budget; the rest goes straight from the source to the sub-hosts, and the
guest's own verification of every byte on the main host pages it back
in. The guest has the devices of a cloud VM (virtio blk on a disk image
both hosts open, net, rng, balloon; 2 vCPUs), and checks every one of
them on the main host too. `--plain` shows QEMU's own precopy to one
host instead.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import splitmem as sm  # noqa: E402
from scenario import Scenario  # noqa: E402


def progress(info):
    ram = info["ram"]
    line = (f"  {info['status']:<9} sent {sm.fmt_bytes(ram.get('transferred', 0)):>10}"
            f"  remaining {sm.fmt_bytes(ram.get('remaining', 0)):>10}"
            f"  {ram.get('mbps', 0):7.1f} Mbit/s  pass {ram.get('dirty-sync-count', 0)}")
    split = info.get("split")
    if split:
        line += "  |" + "".join(
            f" {d['destination']} {d['placed'] * 4096 >> 20} MiB"
            for d in split["destinations"])
    sm.log(line)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mem", type=int, default=1024, help="guest RAM, MiB")
    ap.add_argument("--fill", type=int, default=640, help="memfill MiB")
    ap.add_argument("--dirty", type=int, default=4,
                    help="MiB/s the guest keeps re-writing")
    ap.add_argument("--budget", type=int, default=384,
                    help="main host's resident budget, MiB")
    ap.add_argument("--rate", default=None, help="tc rate per host, e.g. 1gbit")
    ap.add_argument("--plain", action="store_true",
                    help="QEMU's plain precopy to one host instead")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("demo: must run as root (network namespaces, cgroups)")

    sc = Scenario(args.mem, args.fill, args.dirty,
                  subhosts=0 if args.plain else 2, rate=args.rate)
    sm.log(f"guest kit: {sc.kit} (accel {sm.ACCEL})")
    sm.log(f"hosts: source {sc.src_addr}, main {sc.main_addr}"
           + "".join(f", {sh.name} {sh.addr}" for sh in sc.subhosts)
           + (f"; links shaped to {args.rate}" if args.rate else ""))
    sc.boot_source()

    if args.plain:
        sm.log("migrating: QEMU's plain precopy (TLS) to one host")
        info = sc.migrate(split=False, progress=progress)
    else:
        sm.log(f"split migration (TLS everywhere): main host budget "
               f"{args.budget} MiB of {args.mem} MiB guest RAM, "
               f"{len(sc.subhosts)} sub-hosts")
        info = sc.migrate(split=True, budget=args.budget << 20,
                          progress=progress)
    ram = info["ram"]
    sm.log("migration completed:")
    sm.log(f"  total time      {info['total-time']} ms"
           f" (downtime {info.get('downtime', 0)} ms,"
           f" setup {info.get('setup-time', 0)} ms)")
    sm.log(f"  main stream     {sm.fmt_bytes(ram['transferred'])}"
           f" ({ram['normal']} pages, {ram.get('duplicate', 0)} zero pages,"
           f" {ram['dirty-sync-count']} passes)")
    split = info.get("split")
    if split:
        for d in split["destinations"]:
            sm.log(f"  -> {d['destination']:<6} sent {d['pages']} pages"
                   f" ({sm.fmt_bytes(d['bytes'])}), holds {d['placed']} pages")
        sm.log(f"  unused pages    {split['unused-pages']} (sent nowhere);"
               f" stale copies trimmed {split['trimmed-pages']};"
               f" map {sm.fmt_bytes(split['map-bytes'])}")
    sc.quit_source()

    sm.log("main host: asking the guest to verify every byte")
    ok, line = sc.verify_on_main()
    sm.log(f"  guest: {line}")
    sm.log("main host: asking the guest to use every device")
    dev_ok, dev_line = sc.devcheck_on_main()
    sm.log(f"  guest: {dev_line}")
    if not args.plain:
        s = sc.main.qmp.cmd("query-split-memory")
        sm.log(f"  remote page-ins {s['page-ins-remote']}"
               f" (prefetched {s['prefetched-pages']}),"
               f" local page-ins {s['page-ins-local']},"
               f" latency p50 {s['latency-p50']} us p99 {s['latency-p99']} us")
        sm.log(f"  resident on main {s['resident-pages'] * s['page-size'] >> 20}"
               f" MiB (at start {s['resident-pages-at-start'] * s['page-size'] >> 20}"
               f" MiB, budget {s['resident-budget'] >> 20} MiB)")
        if s.get("page-out"):
            sm.log(f"  page-out: {s['page-outs']} written out,"
                   f" {s['clean-drops']} clean and {s['zero-drops']} zero"
                   f" pages dropped, p50 {s['page-out-latency-p50']} us"
                   f" p99 {s['page-out-latency-p99']} us")
        for sh in s["subhosts"]:
            sm.log(f"  {sh['id']}: {sh['pages']} pages still there,"
                   f" {sh['page-ins']} paged in")
    sc.main.quit()
    if not ok:
        sys.exit("demo: the guest's memory is NOT intact after migration")
    if not dev_ok:
        sys.exit("demo: the guest's devices do NOT all work after migration")
    sm.log("demo: done; the guest verified all its memory and used every"
           " device after the migration")


if __name__ == "__main__":
    main()
