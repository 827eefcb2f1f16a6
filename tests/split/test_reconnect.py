#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The main host reconnects to a sub-host after a connection loss (issue 10).

The device guest (test_devices' guest: 2 vCPUs, virtio devices) is
split-migrated with a small budget, so most of its memory is on the two
sub-hosts, with split-reconnect-timeout set to RECONNECT_MS on the main
host. A scratch memfill started on the source keeps SCRATCH_MIB on the
sub-hosts that nothing touches until the second case.
  1. Transient loss: while the guest verifies its memory (memfill,
     paging in remote pages), every connection of the main host is
     killed at each sub-host (`ss -K` in the sub-host's namespace: the
     server's sockets are destroyed, the main host gets a reset).
     Asserts: no SPLIT_SUBHOST_LOST event, the VM keeps running, the
     guest verifies every byte, remote page-ins went on after the kill,
     and each sub-host was reconnected (the main host's stderr says so
     once per reconnect; query-split-memory's 'reconnects' too, if the
     main host has that member) and shows connected again.
  2. Loss for good: the first sub-host's server (nbdkit) is killed with
     SIGKILL. Asserts: SPLIT_SUBHOST_LOST for it arrives no earlier than
     RECONNECT_MS after the kill, and within LOST_WITHIN_S; once the
     guest needs its pages (the scratch memfill verifies) the VM is
     stopped (io-error), and the sub-host shows not connected.
  3. Restarted empty: the other sub-host's server is killed and started
     again at once on the same address, empty (split-reconnect-timeout
     raised to RESTART_RECONNECT_MS). The reconnect succeeds but the
     export holds no identity record: SPLIT_SUBHOST_LOST for it at once
     (well before the timeout), naming the identity record, and no
     reconnect is reported for it.
--quick (make check) and the full form (make bench) differ in the
guest's size only.
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import splitmem as sm  # noqa: E402
from scenario import VM_NAME, Scenario  # noqa: E402

MiB = 1 << 20
# Small enough that nearly all of memfill's pages are remote (see
# test_devices.py).
BUDGET_MIB = 16
SCRATCH_MIB = 32
RECONNECT_MS = 2000
# The loss is declared once the timeout has passed since the failure was
# seen (a read failing at once, the watchdog within 0.5 s); the rest is
# slack for a loaded machine.
LOST_WITHIN_S = 10
# Remote page-ins the verification must have made before the kill, so
# that the kill hits reads in flight.
PAGEINS_BEFORE_KILL = 300
# Kill rounds during the verification, this far apart.
KILL_ROUNDS, KILL_GAP_S = 2, 1.5
# Case 3: long enough that a loss within it is the identity check's.
RESTART_RECONNECT_MS = 20000
RECONNECTED = re.compile(r"split: sub-host '([^']+)' reconnected after "
                         r"(\d+) ms")
check, failures = sm.check, sm.failures


def start_scratch(src):
    """On the source: a memfill of SCRATCH_MIB that then leaves its pages
    alone, so that they stay on the sub-hosts until case 2 needs them."""
    src.serial.mark()
    src.serial.send(f"memfill -m {SCRATCH_MIB} -s 2 -p /run/scratch.pid &")
    m = src.serial.wait(rf"memfill: ready {SCRATCH_MIB} MiB[^\n]*\n", 300)
    sm.log(f"  guest: scratch {m.group(0).strip()}")


def split_info(vm):
    return vm.qmp.cmd("query-split-memory")


def kill_connections(sh):
    """Destroy the server side of every connection to sh's export; return
    how many sockets ss killed."""
    out = sh.ns.run(["ss", "-K", "-t", "-n", f"sport = :{sh.PORT}"],
                    stdout=subprocess.PIPE, text=True).stdout
    # ss prints a header line, then one line per socket it destroyed.
    return sum(1 for ln in out.splitlines()[1:] if ln.strip())


def lost_events(vm):
    vm.qmp.cmd("query-status")      # collects the events sent so far
    return [e for e in vm.qmp.events if e["event"] == "SPLIT_SUBHOST_LOST"]


def case_transient(sc):
    main = sc.main
    s0 = split_info(main)
    sm.log("  sub-hosts hold " + ", ".join(
        f"{h['id']} {h['pages']}" for h in s0["subhosts"]) + " pages")
    main.serial.mark()
    main.serial.send("kill -USR1 $(cat /run/memfill.pid)")
    sm.wait_for(lambda: split_info(main)["page-ins-remote"] >=
                s0["page-ins-remote"] + PAGEINS_BEFORE_KILL, 300,
                "the verification to page in remote pages")
    killed = {sh.name: 0 for sh in sc.subhosts}
    at_kill = None
    for rnd in range(KILL_ROUNDS):
        if rnd:
            time.sleep(KILL_GAP_S)
        for sh in sc.subhosts:
            killed[sh.name] += kill_connections(sh)
        if at_kill is None:
            at_kill = split_info(main)
        sm.log(f"  kill round {rnd + 1}: status "
               f"{main.qmp.cmd('query-status')['status']}, remote page-ins "
               f"{split_info(main)['page-ins-remote']}")
    for name, n in sorted(killed.items()):
        check(n > 0, f"{name}: ss -K destroyed {n} connection(s)")

    m = main.serial.wait(r"memfill: verify (OK|FAILED)[^\n]*\n", 900)
    sm.log(f"  guest: {m.group(0).strip()}")
    check(m.group(1) == "OK", "the guest verified every byte across the "
          "connection kills")
    status = main.qmp.cmd("query-status")["status"]
    check(status == "running", f"the VM kept running ({status})")
    lost = lost_events(main)
    check(not lost, "no SPLIT_SUBHOST_LOST event" +
          "".join(f"\n         {e['data']}" for e in lost))
    # A sub-host whose connections were idle at the kill is reconnected
    # by the watchdog (every 0.5 s): give it a moment.
    try:
        s1 = sm.wait_for(lambda: (lambda s: all(h["connected"] for h in
                                                s["subhosts"]) and s)(
                             split_info(main)), 10,
                         "every sub-host to be connected again")
    except TimeoutError:
        s1 = split_info(main)
    check(all(h["connected"] for h in s1["subhosts"]),
          "every sub-host is connected again: " + ", ".join(
              f"{h['id']} {h['connected']}" for h in s1["subhosts"]))
    grew = s1["page-ins-remote"] - at_kill["page-ins-remote"]
    check(grew > 0, f"remote page-ins went on after the kill (+{grew}: "
          f"{at_kill['page-ins-remote']} -> {s1['page-ins-remote']})")
    seen = {}
    for name, ms in RECONNECTED.findall(main.stderr_text()):
        seen.setdefault(name, []).append(int(ms))
    for sh in sc.subhosts:
        times = seen.get(sh.name, [])
        check(bool(times), f"{sh.name} reconnected {len(times)} time(s), "
              f"after {times} ms")
    for h in s1["subhosts"]:
        if "reconnects" in h:
            check(h["reconnects"] >= 1, f"{h['id']}: query-split-memory "
                  f"reconnects {h['reconnects']}")


def wait_status(vm, want, timeout=60):
    try:
        return sm.wait_for(lambda: vm.qmp.cmd("query-status")["status"] ==
                           want, timeout, f"the VM's status {want}")
    except TimeoutError:
        return False


def case_lost(sc):
    main = sc.main
    s0 = split_info(main)
    pages = {h["id"]: h["pages"] for h in s0["subhosts"]}
    # The one holding most of what is left (the scratch memfill's pages)
    victim = max(sc.subhosts, key=lambda sh: pages.get(sh.name, 0))
    check(pages.get(victim.name, 0) > 0, f"{victim.name} still holds "
          f"{pages.get(victim.name, 0)} pages (the scratch memfill's)")
    t_kill = time.time()
    os.kill(victim.pid(), signal.SIGKILL)
    sm.log(f"  {victim.name}: nbdkit killed (SIGKILL)")
    # The guest needs the scratch pages, some of them there, while the
    # main host retries: those faults wait, nothing is placed instead.
    main.serial.send("kill -USR1 $(cat /run/scratch.pid)")
    try:
        ev = main.qmp.wait_event("SPLIT_SUBHOST_LOST", LOST_WITHIN_S + 20)
    except TimeoutError as exc:
        check(False, f"SPLIT_SUBHOST_LOST: {exc}")
        return victim.name
    ts = ev["timestamp"]
    after = ts["seconds"] + ts["microseconds"] / 1e6 - t_kill
    sm.log(f"  event: {ev['data']}")
    check(ev["data"]["id"] == victim.name,
          f"the lost sub-host is {ev['data']['id']}")
    check(RECONNECT_MS / 1000 <= after <= LOST_WITHIN_S,
          f"SPLIT_SUBHOST_LOST {after:.2f} s after the kill (reconnect "
          f"timeout {RECONNECT_MS / 1000:.1f} s, at most {LOST_WITHIN_S} s)")
    check(wait_status(main, "io-error"), "the VM stopped (io-error) "
          f"({main.qmp.cmd('query-status')['status']})")
    s1 = split_info(main)
    h = {x["id"]: x for x in s1["subhosts"]}[victim.name]
    check(not h["connected"], f"{victim.name} shows not connected")
    check(s1["blocked-faults"] > s0["blocked-faults"], f"faults wait for "
          f"it (blocked-faults {s0['blocked-faults']} -> "
          f"{s1['blocked-faults']})")
    bad = re.findall(r"memfill: verify FAILED[^\n]*",
                     main.serial.buf[-4000:])
    check(not bad, "no verification failed" +
          "".join(f"\n         {b}" for b in bad))
    return victim.name


def case_restarted(sc, lost):
    """Case 3: the other sub-host's server restarted, empty."""
    main = sc.main
    sh = next(x for x in sc.subhosts if x.name != lost)
    main.qmp.cmd("migrate-set-parameters",
                 split_reconnect_timeout=RESTART_RECONNECT_MS)
    before = len([n for n, _ in RECONNECTED.findall(main.stderr_text())
                  if n == sh.name])
    pid = sh.pid()
    os.unlink(sh.pidfile)
    t_kill = time.time()
    os.kill(pid, signal.SIGKILL)
    sh.proc.wait(timeout=30)
    # Same address, port, export name and credentials; nothing stored
    sm.Subhost(sh.name + "-new", sh.ns, sc.wdir, VM_NAME,
               (sc.mem_mib + 256) << 20,
               os.path.join(sc.wdir, f"psk-{VM_NAME}"))
    sm.log(f"  {sh.name}: server restarted empty after "
           f"{time.time() - t_kill:.2f} s")
    try:
        ev = main.qmp.wait_event("SPLIT_SUBHOST_LOST",
                                 RESTART_RECONNECT_MS / 1000 + 20)
    except TimeoutError as exc:
        check(False, f"SPLIT_SUBHOST_LOST: {exc}")
        return
    ts = ev["timestamp"]
    after = ts["seconds"] + ts["microseconds"] / 1e6 - t_kill
    sm.log(f"  event after {after:.2f} s: {ev['data']}")
    check(ev["data"]["id"] == sh.name, f"the lost sub-host is "
          f"{ev['data']['id']}")
    check("identity record" in ev["data"]["error"] and
          after < RESTART_RECONNECT_MS / 1000,
          "lost at once for its identity record, not at the timeout")
    now = len([n for n, _ in RECONNECTED.findall(main.stderr_text())
               if n == sh.name])
    check(now == before, f"no reconnect of {sh.name} was reported "
          f"({before} -> {now})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="the make check size (smaller guest)")
    args = ap.parse_args()
    mem, fill = (512, 96) if args.quick else (2048, 1024)
    t_start = time.monotonic()
    sc = Scenario(mem, fill, dirty_mibs=0, subhosts=2, devices=True)
    sc.boot_source()
    start_scratch(sc.src)

    def set_timeout(vm):
        vm.qmp.cmd("migrate-set-parameters",
                   split_reconnect_timeout=RECONNECT_MS)

    info = sc.migrate(split=True, budget=BUDGET_MIB * MiB,
                      main_started=set_timeout)
    dest = {d["destination"]: d for d in info["split"]["destinations"]}
    sm.log(f"migrated in {info['total-time']} ms: " + ", ".join(
        f"{k} {v['placed']} pages" for k, v in dest.items()))
    got = sc.main.qmp.cmd("query-migrate-parameters").get(
        "split-reconnect-timeout")
    check(got == RECONNECT_MS, f"main host: split-reconnect-timeout {got}")
    sc.quit_source()
    try:
        sm.log("case 1: connections killed at the sub-hosts")
        case_transient(sc)
        sm.log("case 2: a sub-host's server killed for good")
        lost = case_lost(sc)
        sm.log("case 3: the other sub-host's server restarted empty")
        case_restarted(sc, lost)
    except TimeoutError as exc:
        check(False, "the guest stopped answering: "
              + str(exc).splitlines()[0])
    lines = [ln for ln in sc.main.stderr_text().splitlines()
             if "split:" in ln or "split-memory:" in ln]
    sm.log("  main host's stderr:" + "".join(f"\n    {ln}"
                                             for ln in lines[-12:]))
    s = split_info(sc.main)
    sm.log(f"  remote page-ins {s['page-ins-remote']}, p99 "
           f"{s['latency-p99']} us, max {s['latency-max']} us")
    # With a sub-host lost, QEMU exits with a failure status: expected.
    sc.main.quit()
    sm.log(f"test_reconnect: {time.monotonic() - t_start:.0f} s")
    if failures:
        sys.exit(f"test_reconnect: {len(failures)} check(s) failed")
    sm.log("test_reconnect: passed")


def run():
    try:
        main()
    except Exception:
        for vm in sm.live_vms():
            sm.log(f"--- {vm.name} (exit {vm.proc.poll()}) stderr:\n"
                   f"{vm.stderr_text()[-3000:]}")
        raise


if __name__ == "__main__":
    run()
