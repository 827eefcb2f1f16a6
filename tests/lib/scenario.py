# SPDX-License-Identifier: GPL-2.0-or-later
"""A split-migration scenario on one machine, shared by `make demo`, the
multi-host system test and the benchmark.

Hosts are network namespaces on one switched segment (optionally shaped
with tc): the source, the main host, and N sub-hosts running
contrib/subhost/splitmem-subhost. The guest is the guest kit's Linux
under TCG (ACCEL selects), filling memory with memfill's pattern. Every
channel uses TLS (PSK): the main migration stream (tls-creds) and the
sub-host channels (split-tls-creds, identity = the VM's name).

By default the guest has the devices of a cloud VM (devices=True): two
vCPUs, virtio-blk on a raw image in the scenario's work directory that
the source and the main host both open (shared storage), virtio-net on
slirp, virtio-rng, virtio-balloon with stats polling and free page
reporting; its init brings them up, uses one queue of each once and
keeps the others busy from CPU 0 (guest/devices).
"""

import os
import re

import time

import splitmem as sm

VM_NAME = "vm1"
MIGRATION_PORT = 4444
# What QEMU prints when a virtio device's state does not match its rings.
VIRTIO_ERROR = re.compile(r"VQ|inconsistent|Guest moved|virtio:")


class Scenario:
    def __init__(self, mem_mib, fill_mib, dirty_mibs=0, subhosts=2,
                 rate=None, delay=None, log=sm.log, kit=None, devices=True):
        self.mem_mib, self.fill_mib, self.dirty = mem_mib, fill_mib, dirty_mibs
        self.log = log
        self.wdir = sm.workdir("splitmem-scenario-")
        self.disk = (sm.make_disk(os.path.join(self.wdir, "disk.raw"))
                     if devices else None)
        self.kit = kit or sm.guest_kit()
        self.lan = Lan = sm.Lan(rate=rate, delay=delay)
        self.src_ns = sm.Netns("src")
        self.main_ns = sm.Netns("main")
        self.src_addr = Lan.attach(self.src_ns)
        self.main_addr = Lan.attach(self.main_ns)
        self.psk_dir, per_id = sm.psk_credentials(self.wdir,
                                                  ["qemu", VM_NAME])
        self.subhosts = []
        # The export covers every RAM block's offset (ram_addr_t space):
        # guest RAM plus firmware and option ROMs.
        export_size = (mem_mib + 256) << 20
        for i in range(subhosts):
            ns = sm.Netns(f"sub{i + 1}")
            addr = Lan.attach(ns)
            sh = sm.Subhost(f"sub{i + 1}", ns, self.wdir, VM_NAME,
                            export_size, per_id[VM_NAME])
            sh.addr = addr
            self.subhosts.append(sh)
        self.src = self.main = None

    def _tls_objects(self, endpoint):
        user = ",username=qemu" if endpoint == "client" else ""
        return ["-object", f"tls-creds-psk,id=tls0,dir={self.psk_dir},"
                           f"endpoint={endpoint}{user}",
                "-object", f"tls-creds-psk,id=subtls,dir={self.psk_dir},"
                           f"endpoint=client,username={VM_NAME}"]

    def boot_source(self):
        append = f"splitmem.memfill={self.fill_mib} splitmem.dirty={self.dirty}"
        t0 = time.monotonic()
        self.src = sm.Vm("source", self.wdir, self.mem_mib, kit=self.kit,
                         netns=self.src_ns, append=append,
                         extra=self._tls_objects("client"),
                         devices=self.disk)
        self.src.serial.wait(r"splitmem-guest: up", 180)
        self.log(f"source: guest booted in {time.monotonic() - t0:.1f} s")
        m = self.src.serial.wait(r"memfill: ready [^\n]*\n", 900)
        self.log(f"  guest: {m.group(0).strip()}")
        if self.disk:
            # The guest brings its devices up once memfill is ready.
            m = self.src.serial.wait(r"^devices: (ready|FAILED)[^\n]*$", 180)
            self.log(f"  guest: {m.group(0).strip()}")
            if m.group(1) != "ready":
                raise RuntimeError(f"the guest's devices: {m.group(0)}")
            self.src.balloon_stats()

    def subhost_params(self):
        cap = (self.mem_mib << 20) // max(1, len(self.subhosts)) + (64 << 20)
        return [{"id": sh.name,
                 "uri": f"nbds://{sh.addr}:{sh.PORT}/{VM_NAME}",
                 "capacity": cap} for sh in self.subhosts]

    def migrate(self, split=True, budget=None, policy=None, progress=None,
                tls=True, main_started=None, main_extra=None):
        """Start the main host and migrate; return the final query-migrate.

        split=False runs QEMU's plain precopy to a main host that holds
        everything (the baseline). main_started(vm) runs once the main
        host's QEMU is up, before the migration starts; main_extra: more
        options for it."""
        self.main = sm.Vm("main" if split else "plain-dst", self.wdir,
                          self.mem_mib, kit=self.kit, netns=self.main_ns,
                          incoming="defer",
                          extra=self._tls_objects("server") +
                          (main_extra or []),
                          devices=self.disk)
        if self.disk:
            self.main.balloon_stats()
        if main_started:
            main_started(self.main)
        caps = [{"capability": "events", "state": True}]
        if split:
            # The source keeps the VM until the main host confirmed, on
            # the return path, that it runs it
            caps += [{"capability": "split-memory", "state": True},
                     {"capability": "return-path", "state": True}]
        params = {}
        if tls:
            params["tls-creds"] = "tls0"
        if split:
            params.update({"split-subhosts": self.subhost_params(),
                           "split-resident-budget": budget,
                           "split-tls-creds": "subtls"})
            if policy:
                params["split-policy"] = policy
        for vm in (self.src, self.main):
            vm.qmp.cmd("migrate-set-capabilities", capabilities=caps)
            if params:
                vm.qmp.cmd("migrate-set-parameters", **params)
        uri = f"tcp:{self.main_addr}:{MIGRATION_PORT}"
        self.main.qmp.cmd("migrate-incoming", uri=uri)
        t0 = time.monotonic()
        self.src.qmp.cmd("migrate", uri=uri)
        while True:
            info = self.src.qmp.cmd("query-migrate")
            if info.get("status") in ("completed", "failed", "cancelled"):
                break
            if progress and "ram" in info:
                progress(info)
            time.sleep(0.5)
        info["wall-time"] = time.monotonic() - t0
        if info["status"] != "completed":
            raise RuntimeError(f"migration {info['status']}: "
                               f"{info.get('error-desc', '')}")
        sm.wait_for(lambda: self.main.qmp.cmd("query-status")["status"]
                    == "running", 60, "the main host to run the guest")
        return info

    def verify_on_main(self, timeout=900):
        """Ask the guest to verify every byte; return (ok, line)."""
        self.main.serial.mark()
        self.main.serial.send("kill -USR1 $(cat /run/memfill.pid)")
        m = self.main.serial.wait(r"memfill: verify (OK|FAILED)[^\n]*\n", timeout)
        return m.group(1) == "OK", m.group(0).strip()

    def devcheck_on_main(self, timeout=300):
        """One round of every device in the guest; return (ok, line)."""
        return self.main.devcheck(timeout)

    def virtio_errors(self, vm=None):
        """Lines of the main host's (or vm's) stderr about broken virtio
        state."""
        vm = vm or self.main
        return [ln for ln in vm.stderr_text().splitlines()
                if VIRTIO_ERROR.search(ln)]

    def quit_source(self):
        if self.src:
            self.src.quit()
