#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""make demo: live-migrate a running Linux guest between two hosts.

Two network namespaces (source, destination) joined by a veth pair. The
guest (Debian's stock kernel, TCG) fills memory with memfill's pattern
and keeps re-writing part of it while the migration runs; afterwards
the guest verifies every byte on the destination and says so on its
console. This is QEMU's plain precopy migration: split migration onto a
main host and sub-hosts is not in this demo yet.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import splitmem as sm  # noqa: E402


def progress(info):
    ram = info.get("ram", {})
    return (f"  {info['status']:<10} transferred {sm.fmt_bytes(ram.get('transferred', 0)):>10}"
            f"  remaining {sm.fmt_bytes(ram.get('remaining', 0)):>10}"
            f"  {ram.get('mbps', 0):8.1f} Mbit/s  pass {ram.get('dirty-sync-count', 0)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mem", type=int, default=1024, help="guest RAM, MiB")
    ap.add_argument("--fill", type=int, default=512, help="memfill MiB")
    ap.add_argument("--dirty", type=int, default=4,
                    help="MiB/s the guest keeps re-writing")
    ap.add_argument("--rate", default=None, help="tc rate limit, e.g. 1gbit")
    args = ap.parse_args()

    if os.geteuid() != 0:
        sys.exit("demo: must run as root (network namespaces)")
    wdir = sm.workdir("splitmem-demo-")
    kit = sm.guest_kit()
    sm.log(f"guest kit: {kit} (accel {sm.ACCEL})")

    src_ns, dst_ns = sm.Netns("src"), sm.Netns("dst")
    src_addr, dst_addr = sm.link(src_ns, dst_ns, rate=args.rate)
    sm.log(f"namespaces: {src_ns.name} ({src_addr}) -> {dst_ns.name} ({dst_addr})"
           + (f", link {args.rate}" if args.rate else ""))

    append = f"splitmem.memfill={args.fill} splitmem.dirty={args.dirty}"
    src = sm.Vm("source", wdir, args.mem, kit=kit, netns=src_ns,
                append=append)
    t0 = time.monotonic()
    src.serial.wait(r"splitmem-guest: up", 120)
    sm.log(f"source: guest booted in {time.monotonic() - t0:.1f} s")
    for line in (r"memfill: filled \d+/\d+ MiB", ) * 8:
        sm.log("  guest: " + src.serial.wait(line, 300).group(0))
    sm.log("  guest: " + src.serial.wait(r"memfill: ready .*", 60).group(0))

    dst = sm.Vm("destination", wdir, args.mem, kit=kit, netns=dst_ns,
                incoming="defer")
    dst.qmp.cmd("migrate-incoming", uri=f"tcp:{dst_addr}:4444")
    for vm in (src, dst):
        vm.qmp.cmd("migrate-set-capabilities", capabilities=[
            {"capability": "events", "state": True}])

    sm.log(f"migrating: plain QEMU precopy over tcp:{dst_addr}:4444")
    src.qmp.cmd("migrate", uri=f"tcp:{dst_addr}:4444")
    while True:
        info = src.qmp.cmd("query-migrate")
        if info.get("status") in ("completed", "failed", "cancelled"):
            break
        if "ram" in info:
            sm.log(progress(info))
        time.sleep(1)
    if info["status"] != "completed":
        sys.exit(f"demo: migration {info['status']}: "
                 f"{info.get('error-desc', '')}")
    sm.wait_for(lambda: dst.qmp.cmd("query-status")["status"] == "running",
                30, "the destination to run")

    ram = info["ram"]
    sm.log("migration completed:")
    sm.log(f"  total time      {info['total-time']} ms")
    sm.log(f"  downtime        {info.get('downtime', 0)} ms")
    sm.log(f"  setup time      {info.get('setup-time', 0)} ms")
    sm.log(f"  transferred     {sm.fmt_bytes(ram['transferred'])}"
           f" (normal pages {ram['normal']}, zero pages "
           f"{ram.get('duplicate', 0)}, passes {ram['dirty-sync-count']})")
    sm.log(f"  guest RAM       {sm.fmt_bytes(ram['total'])}")
    src.quit()

    sm.log("destination: asking the guest to verify every byte")
    dst.serial.mark()
    dst.serial.send("kill -USR1 $(cat /run/memfill.pid)")
    m = dst.serial.wait(r"memfill: verify (OK|FAILED).*", 300)
    sm.log("  guest: " + m.group(0))
    dst.quit()
    if m.group(1) != "OK":
        sys.exit("demo: the guest's memory is NOT intact after migration")
    sm.log("demo: done; the guest's memory is intact after migration")


if __name__ == "__main__":
    main()
