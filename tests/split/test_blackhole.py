#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""A silent sub-host never holds the source of a split migration (issue 10).

The device guest (2 vCPUs, virtio devices, a disk: tests/lib/scenario.py)
is split-migrated with a small budget, so most of its pages are for the
two sub-hosts. In each case the first sub-host is blackholed: every
packet its namespace sends is dropped (a pfifo of length 0 as the root
qdisc of its veth), so its TCP peers see silence, not a reset. The test
first proves the blackhole works (a TCP connect from the source's
namespace to its port completes before and not within 1 s after).
Throughout, the source's QMP is polled (query-status, query-migrate,
every POLL_GAP_S) and the latency of every reply is measured.
  1. setup: blackholed before `migrate`; the migration stays in 'setup'
     (the connect to the sub-host cannot complete) for POLL_S, then
     migrate_cancel: 'cancelled' within END_WITHIN_S, well before the
     connect timeout (10 s).
  2. bulk: blackholed once query-migrate's split statistics show pages
     written to it; the migration stays 'active' for POLL_S (a tiny
     downtime-limit keeps it from switching over), then `yank` of the
     migration instance ('failed') and, in a second run, migrate_cancel
     ('cancelled'), each within END_WITHIN_S.
  3. completion: pause-before-switchover stops the migration once the
     bulk phase converged and the sub-host writes are done (the split
     statistics stay still); the sub-host is blackholed, downtime-limit
     raised to COMPLETE_DOWNTIME_MS and the switchover let go. The
     migration fails at the switchover deadline, max(5 s, 2 x
     downtime-limit) after it, no earlier and at most DEADLINE_SLACK_S
     later, with an error naming the deadline.
  4. inbound: the sub-host receives nothing instead (its inbound packets
     dropped at the switch), so the source's writes to it wait in the
     source's sockets; migrate_cancel. The cleanup cannot reach the
     sub-host and gives it up; then the blackhole is lifted. The
     export's data (nbdinfo --map --totals, from inside the sub-host's
     namespace) is the same STALE_QUIET_S later: no write the cancel
     gave up lands there late, where it would overwrite the pages of a
     later migration.
Asserted in every case: every QMP reply of the source within
QMP_MAX_MS, the source running again afterwards, and the guest's own
verification of every byte on the source (memfill). The source is
re-used from case to case (a fresh main host each time), so a migration
after a cancelled, yanked or failed one is exercised as well.
--quick (make check) and the full form (make bench) differ in the
guest's size only.
"""

import argparse
import concurrent.futures
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import splitmem as sm  # noqa: E402
from scenario import MIGRATION_PORT, VM_NAME, Scenario  # noqa: E402

MiB = 1 << 20
# Small enough that nearly all of memfill's pages go to the sub-hosts.
BUDGET_MIB = 16
# What the source's QMP may take for any reply while a sub-host is silent.
QMP_MAX_MS = 100
# How long each case watches the held migration, and how often it asks.
POLL_S, POLL_GAP_S = 2.0, 0.02
# From migrate_cancel or yank to the migration's end.
END_WITHIN_S = 2.0
# The source runs again this soon after the migration ended.
RUNNING_WITHIN_S = 5.0
# A blackholed port must not accept a connection within this.
PROBE_S = 1.0
# Case 2: sub-host writes paced so that the bulk phase lasts, and a
# downtime-limit so small that the migration never switches over while
# any write is in flight (those count as pending).
BULK_SPLIT_BW = 16 * MiB
BULK_DOWNTIME_MS = 1
# Pages written to the first sub-host before it is blackholed.
BULK_PAGES_BEFORE = 256
# Case 3: the deadline is then max(5 s, 2 x this) = 6 s, which tells the
# 2 x downtime-limit rule from the 5 s floor.
COMPLETE_DOWNTIME_MS = 3000
SWITCHOVER_MIN_MS = 5000
DEADLINE_SLACK_S = 3.0
# The split statistics stay unchanged this long: no sub-host write is
# being submitted any more.
STILL_S = 0.5
# Case 4: after the cleanup gave the sub-host up and the blackhole was
# lifted, this long for TCP to retransmit what the source's sockets to it
# still queued, were they not reset (backoff doubles from 200 ms: a
# retransmission falls in any window this long within the first minute).
STALE_QUIET_S = 20.0
# A cleanup after a failed migration still trims the sub-hosts; the next
# migration is refused meanwhile.
CLEANUP_BUSY = "still drops its pages"
CLEANUP_WITHIN_S = 60
TERMINAL = ("completed", "failed", "cancelled")
check, failures = sm.check, sm.failures
figures = []


def figure(what):
    sm.log("  figure: " + what)
    figures.append(what)


class Latency:
    """Every QMP command sent to a VM, with the time its reply took and
    the phase of the case it was sent in."""

    def __init__(self, vm):
        self.vm = vm
        self.samples = []       # (phase, command, ms, seconds into phase)
        self._phase, self.t_phase = "-", time.monotonic()

    @property
    def phase(self):
        return self._phase

    @phase.setter
    def phase(self, name):
        self._phase, self.t_phase = name, time.monotonic()

    def cmd(self, name, **args):
        t0 = time.monotonic()
        try:
            return self.vm.qmp.cmd(name, **args)
        finally:
            self.samples.append((self.phase, name,
                                 (time.monotonic() - t0) * 1000,
                                 t0 - self.t_phase))

    def poll(self, seconds, until=None):
        """Ask query-status and query-migrate every POLL_GAP_S for seconds,
        or until until(status, info); return [(t, status, info)]."""
        seen = []
        end = time.monotonic() + seconds
        while True:
            status = self.cmd("query-status")["status"]
            info = self.cmd("query-migrate")
            seen.append((time.monotonic(), status, info))
            if until and until(status, info):
                break
            if time.monotonic() >= end:
                break
            time.sleep(POLL_GAP_S)
        return seen

    def worst(self, phase=None):
        return max((s for s in self.samples if phase in (None, s[0])),
                   key=lambda s: s[2], default=("-", "none", 0.0, 0.0))

    def report(self, case):
        phases = []
        for s in self.samples:
            if s[0] not in phases:
                phases.append(s[0])
        for phase in phases:
            _, name, ms, at = self.worst(phase)
            n = sum(1 for s in self.samples if s[0] == phase)
            figure(f"{case}, {phase}: max QMP latency {ms:.1f} ms ({name}, "
                   f"{at:.2f} s into it) over {n} replies")
        phase, name, ms, _ = self.worst()
        check(ms < QMP_MAX_MS, f"{case}: every QMP reply of the source "
              f"within {QMP_MAX_MS} ms (max {ms:.1f} ms, {name}, {phase})")


class Blackhole:
    """Drop every packet a sub-host's namespace sends onto the segment
    (outbound), or every packet the segment delivers to it (inbound: at
    the switch's port to it)."""

    def __init__(self, sc, sh, inbound=False):
        self.sc, self.sh, self.inbound = sc, sh, inbound
        if inbound:
            self.ns, self.ifc = sc.lan.switch, sc.lan.portname[sh.ns.name]
        else:
            self.ns, self.ifc = sh.ns, sc.lan.ifname[sh.ns.name]
        self.on = False

    def __enter__(self):
        self.ns.run(["tc", "qdisc", "replace", "dev", self.ifc, "root",
                     "pfifo", "limit", "0"])
        self.on = True
        sm.log(f"  {self.sh.name}: blackholed "
               f"({'inbound' if self.inbound else 'outbound'}, {self.ifc})")
        return self

    def __exit__(self, *exc):
        self.lift()

    def lift(self):
        if not self.on:
            return
        self.ns.run(["tc", "qdisc", "del", "dev", self.ifc, "root"])
        if not self.inbound:
            sm.shape(self.ns, self.ifc, self.sc.lan.rate, self.sc.lan.delay)
        self.on = False
        sm.log(f"  {self.sh.name}: blackhole lifted")


PROBE = """
import socket, sys
s = socket.socket()
s.settimeout(float(sys.argv[3]))
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print("connected")
except OSError as e:
    print("no:", e)
"""


def probe(sc, sh):
    """Whether a TCP connect from the source's namespace to sh's port
    completes within PROBE_S."""
    out = sc.src_ns.run([sys.executable, "-c", PROBE, sh.addr,
                         str(sh.PORT), str(PROBE_S)],
                        stdout=subprocess.PIPE, text=True).stdout.strip()
    return out == "connected", out


def check_blackhole(sh, result):
    ok, out = result
    check(not ok, f"{sh.name}: the blackhole holds (a connect to its port "
          f"from the source does not complete in {PROBE_S:.0f} s: {out})")


def start_main(sc, n, caps, params):
    """A fresh main host, listening for the migration."""
    main = sm.Vm(f"main{n}", sc.wdir, sc.mem_mib, kit=sc.kit,
                 netns=sc.main_ns, incoming="defer",
                 extra=sc._tls_objects("server"), devices=sc.disk)
    main.qmp.cmd("migrate-set-capabilities", capabilities=caps)
    main.qmp.cmd("migrate-set-parameters", **params)
    main.qmp.cmd("migrate-incoming", uri=uri(sc))
    return main


def uri(sc):
    return f"tcp:{sc.main_addr}:{MIGRATION_PORT}"


def migrate(sc, lat):
    """Start the migration on the source; a cleanup of the previous one
    that still trims the sub-hosts refuses it: try again meanwhile."""
    t0 = time.monotonic()
    while True:
        try:
            lat.cmd("migrate", uri=uri(sc))
            break
        except sm.QMPError as exc:
            if (CLEANUP_BUSY not in str(exc) or
                    time.monotonic() - t0 > CLEANUP_WITHIN_S):
                raise
            time.sleep(0.2)
    waited = time.monotonic() - t0
    if waited > 0.5:
        figure(f"the previous migration's cleanup held the next one "
               f"{waited:.1f} s")


def sub_pages(info):
    """{destination: pages written} from query-migrate's split member."""
    return {d["destination"]: d["pages"]
            for d in info.get("split", {}).get("destinations", [])}


def stays(lat, status, case, why):
    """Poll for POLL_S: the migration stays in status meanwhile. Returns
    what the polls saw."""
    seen = lat.poll(POLL_S, until=lambda st, info:
                    info.get("status") != status)
    states = sorted({info.get("status") for _, _, info in seen})
    check(states == [status], f"{case}: the migration stays '{status}' for "
          f"{POLL_S:.0f} s {why} ({states}, {len(seen)} polls)")
    return seen


def wait_end(lat, t0, timeout):
    """Poll until the migration ends; return (status, seconds since t0,
    its last query-migrate)."""
    seen = lat.poll(timeout, until=lambda st, info:
                    info.get("status") in TERMINAL)
    t, _, info = seen[-1]
    return info.get("status"), t - t0, info


def check_running(sc, lat, case):
    t0 = time.monotonic()
    seen = lat.poll(RUNNING_WITHIN_S, until=lambda st, _: st == "running")
    st = seen[-1][1]
    check(st == "running", f"{case}: the source runs again ({st}, "
          f"{seen[-1][0] - t0:.2f} s after the migration ended)")


def verify_source(sc, case):
    sc.src.serial.mark()
    sc.src.serial.send("kill -USR1 $(cat /run/memfill.pid)")
    m = sc.src.serial.wait(r"memfill: verify (OK|FAILED)[^\n]*\n", 600)
    sm.log(f"  guest: {m.group(0).strip()}")
    check(m.group(1) == "OK", f"{case}: the guest verified every byte on "
          "the source")


def set_source(sc, caps, params):
    sc.src.qmp.cmd("migrate-set-capabilities", capabilities=caps)
    sc.src.qmp.cmd("migrate-set-parameters", **params)


class Env:
    """What every case shares: the scenario, capabilities, parameters."""

    def __init__(self, sc):
        self.sc = sc
        self.caps = [{"capability": "events", "state": True},
                     {"capability": "split-memory", "state": True},
                     {"capability": "return-path", "state": True}]
        self.params = {"tls-creds": "tls0",
                       "split-subhosts": sc.subhost_params(),
                       "split-resident-budget": BUDGET_MIB * MiB,
                       "split-tls-creds": "subtls"}
        self.mains = 0
        self.main = None

    def new_main(self):
        if self.main:
            self.main.kill()
        self.mains += 1
        self.main = start_main(self.sc, self.mains, self.caps, self.params)
        return self.main

    def finish(self):
        if self.main:
            self.main.kill()
            self.main = None


def case_setup(env):
    sc = env.sc
    sh = sc.subhosts[0]
    case = "setup"
    set_source(sc, env.caps + [{"capability": "pause-before-switchover",
                                "state": False}],
               {**env.params, "downtime-limit": 300,
                "split-max-bandwidth": 0})
    env.new_main()
    ok, out = probe(sc, sh)
    check(ok, f"{sh.name}: a connect to its port completes before the "
          f"blackhole ({out})")
    lat = Latency(sc.src)
    with Blackhole(sc, sh):
        check_blackhole(sh, probe(sc, sh))
        lat.phase = f"{sh.name} silent"
        t_mig = time.monotonic()
        migrate(sc, lat)
        stays(lat, "setup", case, f"with {sh.name} silent")
        t_c = time.monotonic()
        lat.cmd("migrate_cancel")
        status, dt, info = wait_end(lat, t_c, 15)
        lat.phase = "ended"
        figure(f"{case}: migrate_cancel -> {status} in {dt * 1000:.0f} ms "
               f"({t_c - t_mig:.1f} s after migrate)")
        check(status == "cancelled" and dt <= END_WITHIN_S,
              f"{case}: 'cancelled' within {END_WITHIN_S:.0f} s of the "
              f"cancel ({status}, {dt:.2f} s; "
              f"{info.get('error-desc', '')})")
        check_running(sc, lat, case)
    lat.report(case)
    verify_source(sc, case)


def start_bulk(env, sh, case):
    """Start a migration held in its bulk phase, writing to sh; return
    its Latency, or None (a failed check) if it is not active by then."""
    sc = env.sc
    set_source(sc, env.caps + [{"capability": "pause-before-switchover",
                                "state": False}],
               {**env.params, "downtime-limit": BULK_DOWNTIME_MS,
                "split-max-bandwidth": BULK_SPLIT_BW})
    env.new_main()
    lat = Latency(sc.src)
    lat.phase = f"{sh.name} up"
    migrate(sc, lat)
    seen = lat.poll(300, until=lambda st, info:
                    info.get("status") in TERMINAL or
                    sub_pages(info).get(sh.name, 0) >= BULK_PAGES_BEFORE)
    info = seen[-1][2]
    if info.get("status") != "active":
        check(False, f"{case}: the migration is active while pages go to "
              f"{sh.name} ({info.get('status')}: "
              f"{info.get('error-desc', '')})")
        return None
    sm.log(f"  pages written so far: {sub_pages(info)}")
    return lat


def case_bulk(env, how):
    sc = env.sc
    sh = sc.subhosts[0]
    case = f"bulk ({how})"
    lat = start_bulk(env, sh, case)
    if not lat:
        return
    with concurrent.futures.ThreadPoolExecutor(1) as pool, \
            Blackhole(sc, sh):
        lat.phase = f"{sh.name} silent"
        fut = pool.submit(probe, sc, sh)
        seen = stays(lat, "active", case, f"with {sh.name} silent")
        check_blackhole(sh, fut.result())
        sm.log(f"  pages written then: {sub_pages(seen[-1][2])}")
        t_c = time.monotonic()
        if how == "yank":
            yanks = lat.cmd("query-yank")
            check({"type": "migration"} in yanks, f"{case}: the migration's "
                  f"yank instance is registered ({yanks})")
            lat.cmd("yank", instances=[{"type": "migration"}])
            want = "failed"
        else:
            lat.cmd("migrate_cancel")
            want = "cancelled"
        status, dt, info = wait_end(lat, t_c, 15)
        lat.phase = "ended"
        figure(f"{case}: {how} -> {status} in {dt * 1000:.0f} ms")
        check(status == want and dt <= END_WITHIN_S,
              f"{case}: '{want}' within {END_WITHIN_S:.0f} s of the {how} "
              f"({status}, {dt:.2f} s; {info.get('error-desc', '')})")
        check_running(sc, lat, case)
    lat.report(case)
    verify_source(sc, case)


def export_data_bytes(sc, sh):
    """Bytes of data that sh's export holds (nbdinfo --map --totals, run
    inside sh's namespace, so that no blackhole is in its way)."""
    psk = os.path.join(sc.psk_dir, "keys.psk")
    # The user part is the PSK identity
    uri = (f"nbds://{VM_NAME}@127.0.0.1:{sh.PORT}/{VM_NAME}"
           f"?tls-psk-file={psk}")
    out = sh.ns.run(["nbdinfo", "--map", "--totals", uri],
                    stdout=subprocess.PIPE, text=True).stdout
    data = 0
    for line in out.splitlines():
        f = line.split()
        # "<bytes> <percent>% <type> <description>"; type bit 0: a hole
        if len(f) >= 3 and f[0].isdigit() and not int(f[2]) & 1:
            data += int(f[0])
    return data


def case_inbound(env):
    sc = env.sc
    sh = sc.subhosts[0]
    case = "inbound"
    lat = start_bulk(env, sh, case)
    if not lat:
        return
    with Blackhole(sc, sh, inbound=True):
        lat.phase = f"{sh.name} receives nothing"
        stays(lat, "active", case, f"while {sh.name} receives nothing")
        check_blackhole(sh, probe(sc, sh))
        t_c = time.monotonic()
        lat.cmd("migrate_cancel")
        status, dt, info = wait_end(lat, t_c, 15)
        lat.phase = "ended"
        figure(f"{case}: cancel -> {status} in {dt * 1000:.0f} ms")
        check(status == "cancelled" and dt <= END_WITHIN_S,
              f"{case}: 'cancelled' within {END_WITHIN_S:.0f} s of the "
              f"cancel ({status}, {dt:.2f} s)")
        check_running(sc, lat, case)
        # Its cleanup cannot reach the sub-host, and gives it up
        gave_up = f"sub-host '{sh.name}' is not connected"
        try:
            sm.wait_for(lambda: gave_up in sc.src.stderr_text(),
                        CLEANUP_WITHIN_S, "the cleanup to give the "
                        "sub-host up")
        except TimeoutError:
            check(False, f"{case}: the cleanup gave {sh.name} up "
                  f"({gave_up!r} on the source's stderr)")
            return
        # Nothing reaches the sub-host while blackholed: measured now
        held = export_data_bytes(sc, sh)
        rx0 = sc.lan.rx_bytes(sh.ns)
    time.sleep(STALE_QUIET_S)
    rx = sc.lan.rx_bytes(sh.ns) - rx0
    after = export_data_bytes(sc, sh)
    figure(f"{case}: {sh.name}'s export held {held} bytes of data, "
           f"{after} bytes {STALE_QUIET_S:.0f} s after it could receive "
           f"again; it received {rx} bytes meanwhile")
    check(after == held, f"{case}: not one write that the cancel gave up "
          f"reaches {sh.name}'s export once it can receive again ({held} "
          f"bytes of data before, {after} after {STALE_QUIET_S:.0f} s)")
    lat.report(case)
    verify_source(sc, case)


def case_completion(env):
    sc = env.sc
    sh = sc.subhosts[0]
    case = "completion"
    set_source(sc, env.caps + [{"capability": "pause-before-switchover",
                                "state": True}],
               {**env.params, "downtime-limit": 300,
                "split-max-bandwidth": 0})
    env.new_main()
    lat = Latency(sc.src)
    lat.phase = f"bulk, {sh.name} up"
    migrate(sc, lat)
    # The bulk phase, unshaped, until the migration converged and stopped
    # before the switchover; QMP is watched all along.
    seen = lat.poll(600, until=lambda st, info: info.get("status") in
                    TERMINAL + ("pre-switchover",))
    info = seen[-1][2]
    if info.get("status") != "pre-switchover":
        check(False, f"{case}: the migration converged and paused before "
              f"the switchover ({info.get('status')}: "
              f"{info.get('error-desc', '')})")
        return
    t_pause = time.monotonic()
    lat.phase = f"pre-switchover, {sh.name} up"
    prev = sub_pages(info)
    while True:
        time.sleep(STILL_S)
        info = lat.poll(0)[-1][2]
        now = sub_pages(info)
        if now == prev or time.monotonic() - t_pause > 30:
            break
        prev = now
    check(now == prev, f"{case}: no sub-host write is submitted any more "
          f"in pre-switchover ({now})")
    check(now.get(sh.name, 0) > 0, f"{case}: {sh.name} holds pages "
          f"({now.get(sh.name, 0)} written)")
    deadline_s = max(SWITCHOVER_MIN_MS, 2 * COMPLETE_DOWNTIME_MS) / 1000
    with concurrent.futures.ThreadPoolExecutor(1) as pool, \
            Blackhole(sc, sh):
        lat.phase = f"pre-switchover, {sh.name} silent"
        fut = pool.submit(probe, sc, sh)
        seen = lat.poll(PROBE_S + 0.2)
        check_blackhole(sh, fut.result())
        lat.cmd("migrate-set-parameters",
                downtime_limit=COMPLETE_DOWNTIME_MS)
        lat.phase = f"switchover, {sh.name} silent"
        t_c = time.monotonic()
        lat.cmd("migrate-continue", state="pre-switchover")
        status, dt, info = wait_end(lat, t_c,
                                    deadline_s + DEADLINE_SLACK_S + 10)
        lat.phase = "ended"
        if status not in TERMINAL:
            lat.cmd("migrate_cancel")
            wait_end(lat, time.monotonic(), 15)
        err = info.get("error-desc", "")
        figure(f"{case}: switchover -> {status} in {dt:.2f} s (deadline "
               f"{deadline_s:.1f} s): {err}")
        check(status == "failed" and
              deadline_s - 0.05 <= dt <= deadline_s + DEADLINE_SLACK_S,
              f"{case}: 'failed' at the switchover deadline, "
              f"{deadline_s:.1f} s to {deadline_s + DEADLINE_SLACK_S:.1f} s "
              f"after it ({status}, {dt:.2f} s)")
        check(f"{int(deadline_s * 1000)} ms" in err, f"{case}: the error "
              f"names the deadline ({err})")
        check_running(sc, lat, case)
    lat.report(case)
    verify_source(sc, case)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="the make check size (smaller guest)")
    ap.add_argument("--case", action="append", dest="cases",
                    choices=["1", "2a", "2b", "3", "4"],
                    help="run this case (repeatable; default: all, in "
                    "order)")
    args = ap.parse_args()
    mem, fill = (512, 96) if args.quick else (2048, 1024)
    t_start = time.monotonic()
    sc = Scenario(mem, fill, dirty_mibs=1, subhosts=2, devices=True)
    sc.boot_source()
    # No QMP reply of the source may take long here: a stuck one fails
    # the test in seconds, not minutes.
    sc.src.qmp.CMD_TIMEOUT = 30
    env = Env(sc)
    set_source(sc, env.caps, env.params)
    idle = Latency(sc.src)
    idle.poll(1.0)
    _, name, ms, _ = idle.worst()
    figure(f"idle source, no migration: max QMP latency {ms:.1f} ms "
           f"({name}) over {len(idle.samples)} replies")
    cases = {"1": ("a sub-host silent during setup", case_setup),
             "2a": ("a sub-host silent in the bulk phase, yank",
                    lambda e: case_bulk(e, "yank")),
             "2b": ("a sub-host silent in the bulk phase, cancel",
                    lambda e: case_bulk(e, "cancel")),
             "3": ("a sub-host silent at the switchover", case_completion),
             "4": ("a sub-host that receives nothing, cancel",
                   case_inbound)}
    try:
        for name in args.cases or cases:
            what, fn = cases[name]
            sm.log(f"case {name}: {what}")
            fn(env)
    except (TimeoutError, sm.QMPError) as exc:
        check(False, "the test could not go on: "
              + str(exc).splitlines()[0])
    lines = [ln for ln in sc.src.stderr_text().splitlines()
             if "split" in ln]
    sm.log("  source's stderr:" + "".join(f"\n    {ln}"
                                          for ln in lines[-12:]))
    env.finish()
    sc.quit_source()
    sm.log("figures:" + "".join(f"\n  {f}" for f in figures))
    sm.log(f"test_blackhole: {time.monotonic() - t_start:.0f} s")
    if failures:
        sys.exit(f"test_blackhole: {len(failures)} check(s) failed")
    sm.log("test_blackhole: passed")


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
