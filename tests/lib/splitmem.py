# SPDX-License-Identifier: GPL-2.0-or-later
"""Helpers for splitmem's system tests and demo.

QEMU processes with a QMP socket and a serial console on unix sockets,
network namespaces joined by veth (optionally rate-limited with tc), and
cleanup on every exit path. Standard library only.
"""

import atexit
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

SRCDIR = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
BUILD = os.environ.get("SPLITMEM_BUILD", os.path.join(SRCDIR, "build"))
QEMU = os.environ.get("QEMU", os.path.join(BUILD, "qemu", "build",
                                           "qemu-system-x86_64"))
ACCEL = os.environ.get("ACCEL", "tcg")

_cleanups = []


def at_cleanup(fn):
    """Run fn at exit (and on SIGINT/SIGTERM), last registered first."""
    _cleanups.append(fn)


def _run_cleanups(*_):
    while _cleanups:
        fn = _cleanups.pop()
        try:
            fn()
        except Exception as exc:  # cleanup must go on
            print(f"cleanup: {exc}", file=sys.stderr)


def _on_signal(signum, _frame):
    _run_cleanups()
    sys.exit(128 + signum)


atexit.register(_run_cleanups)
signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGINT, _on_signal)
signal.signal(signal.SIGHUP, _on_signal)


def log(msg):
    print(msg, flush=True)


# What a system test checked and found wrong: check() logs an "ok" or a
# "FAILED" line per assertion, and the test ends failing while failures
# holds any.
failures = []


def check(cond, what):
    log(("ok     " if cond else "FAILED ") + what)
    if not cond:
        failures.append(what)


def wait_for(pred, timeout, what, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        val = pred()
        if val:
            return val
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def workdir(prefix="splitmem-"):
    d = tempfile.mkdtemp(prefix=prefix)
    at_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
    return d


def unix_connect(sock, path):
    """Connect sock to a unix socket that may not be listening yet."""
    try:
        sock.connect(path)
        return True
    except (FileNotFoundError, ConnectionRefusedError):
        return False


def extra_monitor(wdir, name):
    """(QEMU options, socket path) of a second QMP monitor, for a thread
    that watches a VM while the test drives it through Vm.qmp."""
    path = os.path.join(wdir, f"{name}.qmp2")
    return ["-qmp", f"unix:{path},server=on,wait=off"], path


class QMPError(Exception):
    pass


class LineReader:
    """Whole lines from a stream socket, with a timeout per call.

    A line is returned only once its newline has arrived; bytes of a
    line that is still arriving stay buffered across timeouts (a file
    from socket.makefile() loses them when a timeout hits mid-line)."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()

    def readline(self, timeout=None):
        """The next line without its newline; raise socket.timeout when
        none is complete in time, EOFError when the peer closed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            nl = self.buf.find(b"\n")
            if nl >= 0:
                line = bytes(self.buf[:nl])
                del self.buf[:nl + 1]
                return line
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise socket.timeout("no whole line in time")
                self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            finally:
                self.sock.settimeout(None)
            if not data:
                raise EOFError("connection closed")
            self.buf += data


class QMP:
    """A minimal QMP client over a unix socket."""

    def __init__(self, path, timeout=30, alive=None):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        wait_for(lambda: (alive and alive()) or unix_connect(self.sock, path),
                 timeout, f"QMP at {path}")
        self.lines = LineReader(self.sock)
        self.events = []
        greeting = self._read(timeout)
        if "QMP" not in greeting:
            raise QMPError(f"bad greeting {greeting}")
        self.cmd("qmp_capabilities")

    def _read(self, timeout=None):
        try:
            line = self.lines.readline(timeout)
        except EOFError:
            raise QMPError("QMP connection closed") from None
        return json.loads(line)

    # No QMP command the tests send takes long: a QEMU that does not answer
    # in this time is stuck (e.g. its main loop waits for a page), and the
    # test must fail rather than wait for ever.
    CMD_TIMEOUT = 300

    def cmd(self, name, **args):
        """Execute a command, return its result or raise QMPError."""
        msg = {"execute": name}
        if args:
            msg["arguments"] = {k.replace("_", "-"): v for k, v in args.items()}
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        deadline = time.monotonic() + self.CMD_TIMEOUT
        while True:
            try:
                resp = self._read(max(0.0, deadline - time.monotonic()))
            except socket.timeout:
                raise QMPError(f"{name}: no reply in {self.CMD_TIMEOUT} s: "
                               "QEMU is stuck") from None
            if "event" in resp:
                self.events.append(resp)
                continue
            if "error" in resp:
                raise QMPError(f"{name}: {resp['error']['desc']}")
            return resp["return"]

    def hmp(self, line):
        return self.cmd("human-monitor-command", command_line=line)

    def wait_event(self, name, timeout=60):
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev["event"] == name:
                    return self.events.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {name} event in {timeout}s")
            try:
                self.events.append(self._read(left))
            except socket.timeout:
                pass

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class Serial:
    """The guest's serial console through a unix-socket chardev."""

    def __init__(self, path, logfile=None, echo=None, timeout=30):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        wait_for(lambda: unix_connect(self.sock, path), timeout,
                 f"serial at {path}")
        self.buf = ""
        self.lock = threading.Condition()
        self.log = open(logfile, "a") if logfile else None
        self.echo = echo
        self.pos = 0
        threading.Thread(target=self._reader, daemon=True).start()

    def _reader(self):
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            text = data.decode(errors="replace").replace("\r", "")
            if self.log:
                self.log.write(text)
                self.log.flush()
            if self.echo:
                self.echo(text)
            with self.lock:
                self.buf += text
                self.lock.notify_all()

    def mark(self):
        """Only output after this point counts for the next wait()."""
        with self.lock:
            self.pos = len(self.buf)

    def wait(self, pattern, timeout=120):
        """Wait for a regex in the output since the mark; return the match.

        Only whole lines count: the search stops at the last newline, so
        an anchored or greedy pattern ('^x=\\d+$') never matches a line
        that has not finished arriving."""
        rx = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                end = self.buf.rfind("\n") + 1
                m = rx.search(self.buf, self.pos, end) if end > self.pos else None
                if m:
                    self.pos = m.end()
                    return m
                left = deadline - time.monotonic()
                if left <= 0:
                    tail = self.buf[-2000:]
                    raise TimeoutError(
                        f"no /{pattern}/ on the console in {timeout}s; "
                        f"last output:\n{tail}")
                self.lock.wait(left)

    def send(self, line):
        self.sock.sendall(line.encode() + b"\n")

    def run(self, command, timeout=60):
        """Run a shell command in the guest; return its output."""
        tag = f"__done_{time.monotonic_ns()}"
        self.mark()
        start = self.pos
        # The tag is split in the echoed command line, whole in the output.
        self.send(f"{command}; echo __done_''{tag[7:]}")
        m = self.wait(rf"^{tag}$", timeout)
        lines = self.buf[start:m.start()].splitlines()
        return "\n".join(lines[1:])

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def guest_kit(kernel_pkg=None):
    """Build (or reuse) the guest kit; return its directory."""
    env = dict(os.environ)
    if kernel_pkg:
        env["GUEST_KERNEL_PKG"] = kernel_pkg
    out = subprocess.run([os.path.join(SRCDIR, "scripts", "guest-kit.sh")],
                         env=env, check=True, stdout=subprocess.PIPE,
                         text=True).stdout.strip().splitlines()[-1]
    return out


class Netns:
    """A network namespace; veth links between namespaces."""

    _seq = 0

    def __init__(self, name):
        Netns._seq += 1
        self.name = f"sm{os.getpid() % 100000}-{Netns._seq}-{name}"
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        at_cleanup(self.delete)
        self.run(["ip", "link", "set", "lo", "up"])

    # nsenter rather than `ip netns exec`: the latter remounts /sys, which
    # hides the cgroup hierarchy the sub-host launcher needs.
    def _enter(self, argv):
        return ["nsenter", f"--net=/run/netns/{self.name}", "--"] + argv

    def run(self, argv, **kw):
        return subprocess.run(self._enter(argv), check=True, **kw)

    def popen(self, argv, **kw):
        return subprocess.Popen(self._enter(argv), **kw)

    def delete(self):
        subprocess.run(["ip", "netns", "pids", self.name],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        out = subprocess.run(["ip", "netns", "pids", self.name],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True).stdout.split()
        for pid in out:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        subprocess.run(["ip", "netns", "delete", self.name],
                       stderr=subprocess.DEVNULL)


def shape(ns, ifc, rate=None, delay=None):
    """Shape what ns sends on ifc: a token bucket at rate (tbf is in
    every kernel config), and a netem delay if one is asked for (not
    every kernel has netem: then this fails loudly)."""
    parent = ["root"]
    if delay:
        ns.run(["tc", "qdisc", "add", "dev", ifc, "root", "handle", "1:",
                "netem", "delay", delay, "limit", "100000"])
        parent = ["parent", "1:1"]
    if rate:
        # A 1 ms burst at the rate, at least 64 KiB (TSO segments).
        bits = float(rate.lower().rstrip("bit").rstrip("k").rstrip("m")
                     .rstrip("g"))
        unit = {"k": 1e3, "m": 1e6, "g": 1e9}.get(
            rate.lower().rstrip("bit")[-1:], 1)
        burst = max(65536, int(bits * unit / 8 / 1000))
        ns.run(["tc", "qdisc", "add", "dev", ifc] + parent +
               ["tbf", "rate", rate, "burst", str(burst),
                "latency", "50ms"])


_link_seq = [0]


def link(a, b, rate=None, delay=None):
    """Join two namespaces with a veth pair on a fresh /30.

    rate (e.g. "1gbit") and delay (e.g. "1ms") shape both directions
    with tc. Returns (addr_in_a, addr_in_b).
    """
    _link_seq[0] += 1
    n = _link_seq[0]
    ia, ib = f"sma{os.getpid() % 10000}x{n}", f"smb{os.getpid() % 10000}x{n}"
    subprocess.run(["ip", "link", "add", ia, "type", "veth", "peer", "name",
                    ib], check=True)
    subprocess.run(["ip", "link", "set", ia, "netns", a.name], check=True)
    subprocess.run(["ip", "link", "set", ib, "netns", b.name], check=True)
    net = f"10.{77 + (n >> 6)}.{(n * 4) & 255}"
    addr_a, addr_b = f"{net}.{1}", f"{net}.{2}"
    for ns, ifc, addr in ((a, ia, addr_a), (b, ib, addr_b)):
        ns.run(["ip", "addr", "add", f"{addr}/30", "dev", ifc])
        ns.run(["ip", "link", "set", ifc, "up"])
        shape(ns, ifc, rate, delay)
    return addr_a, addr_b


class Lan:
    """Hosts (namespaces) on one switched segment: a bridge in its own
    namespace, one veth per host, addresses 10.<n>.0.<i>/24, optional tc
    shaping (rate, delay) on each host's side."""

    _seq = 0

    def __init__(self, rate=None, delay=None):
        Lan._seq += 1
        self.net = f"10.{90 + Lan._seq}.0"
        self.rate, self.delay = rate, delay
        self.switch = Netns(f"sw{Lan._seq}")
        self.switch.run(["ip", "link", "add", "br0", "type", "bridge"])
        self.switch.run(["ip", "link", "set", "br0", "up"])
        self.hosts = 0
        self.ifname = {}
        # The switch's port of each host: its egress is the host's ingress
        self.portname = {}

    def _dev_counter(self, ns, field):
        """Field `field` of ns's veth line in /proc/net/dev."""
        out = subprocess.run(ns._enter(["cat", "/proc/net/dev"]), check=True,
                             stdout=subprocess.PIPE, text=True).stdout
        for line in out.splitlines():
            name, _, fields = line.partition(":")
            if name.strip() == self.ifname[ns.name]:
                return int(fields.split()[field])
        raise RuntimeError(f"no {self.ifname[ns.name]} in {ns.name}")

    def tx_bytes(self, ns):
        """Bytes ns has sent onto the segment (its veth's tx counter)."""
        return self._dev_counter(ns, 8)

    def rx_bytes(self, ns):
        """Bytes ns has received from the segment (its veth's rx counter)."""
        return self._dev_counter(ns, 0)

    def attach(self, ns):
        """Connect ns to the segment; return its address."""
        self.hosts += 1
        i = self.hosts
        tag = f"{os.getpid() % 10000}l{Lan._seq}h{i}"
        host_if, sw_if = f"smh{tag}", f"sms{tag}"
        subprocess.run(["ip", "link", "add", host_if, "type", "veth", "peer",
                        "name", sw_if], check=True)
        subprocess.run(["ip", "link", "set", host_if, "netns", ns.name],
                       check=True)
        subprocess.run(["ip", "link", "set", sw_if, "netns",
                        self.switch.name], check=True)
        self.switch.run(["ip", "link", "set", sw_if, "master", "br0"])
        self.switch.run(["ip", "link", "set", sw_if, "up"])
        addr = f"{self.net}.{i}"
        self.ifname[ns.name] = host_if
        self.portname[ns.name] = sw_if
        ns.run(["ip", "addr", "add", f"{addr}/24", "dev", host_if])
        ns.run(["ip", "link", "set", host_if, "up"])
        shape(ns, host_if, self.rate, self.delay)
        return addr


# The devices of a cloud VM (Vm(devices=DISK)): qdev ids, and the names
# x-query-virtio reports for them.
DEVICE_IDS = {"blk": "blk0", "net": "net0", "rng": "rng0",
              "balloon": "balloon0"}
VIRTIO_NAMES = {"virtio-blk": "blk", "virtio-net": "net", "virtio-rng": "rng",
                "virtio-balloon": "balloon"}
DEVICE_DISK_BYTES = 16 << 20


TAP = "smtap0"
GUEST_GATEWAY = "10.0.2.2"
GATEWAY_MAC = "52:54:00:00:02:02"


def device_args(disk):
    """QEMU options for the device-rich guest: virtio-blk on the raw image
    DISK (both hosts of a migration open the same path: shared storage),
    virtio-net on a tap device of the host's namespace (the guest pings
    the host's side of it, GUEST_GATEWAY: add_tap), virtio-rng, and
    virtio-balloon with free page reporting. One blk queue per vCPU, so
    that a queue the guest uses once (from CPU 1) stays idle."""
    return ["-drive", f"file={disk},format=raw,if=none,id=d0,cache=writeback",
            "-device", f"virtio-blk-pci,drive=d0,id={DEVICE_IDS['blk']},"
                       "num-queues=2",
            "-netdev", f"tap,id=n0,ifname={TAP},script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=n0,id={DEVICE_IDS['net']},"
                       "mac=52:54:00:12:34:56",
            "-device", f"virtio-rng-pci,id={DEVICE_IDS['rng']}",
            "-device", f"virtio-balloon-pci,id={DEVICE_IDS['balloon']},"
                       "free-page-reporting=on"]


def add_tap(ns):
    """The guest's link in namespace ns: a tap device whose host side is
    GUEST_GATEWAY/24, as a cloud host gives each VM (QEMU's slirp is not
    built here). Every host of a migration has its own, with the same
    address and MAC (the guest's ARP entry stays right), so the guest's
    pings work again after it moved."""
    if subprocess.run(ns._enter(["ip", "link", "show", TAP]),
                      stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL).returncode == 0:
        return
    ns.run(["ip", "tuntap", "add", "dev", TAP, "mode", "tap"])
    ns.run(["ip", "link", "set", TAP, "address", GATEWAY_MAC])
    ns.run(["ip", "addr", "add", f"{GUEST_GATEWAY}/24", "dev", TAP])
    ns.run(["ip", "link", "set", TAP, "up"])


def make_disk(path):
    """A zeroed raw disk image for device_args(), if none exists yet."""
    if not os.path.exists(path):
        with open(path, "wb") as f:
            f.truncate(DEVICE_DISK_BYTES)
    return path


_vms = []


def live_vms():
    """Every Vm started by this process (for diagnostics)."""
    return list(_vms)


class Vm:
    """A QEMU process running the guest kit, with QMP and serial sockets.

    devices=DISK gives the guest 2 vCPUs and the virtio devices of a cloud
    VM (device_args), and tells its init to bring them up and keep them
    busy (splitmem.devices=1)."""

    def __init__(self, name, wdir, mem_mib, kit=None, netns=None, append="",
                 incoming=None, extra=None, smp=1, echo=None, devices=None):
        self.name = name
        self.qmp_path = os.path.join(wdir, f"{name}.qmp")
        self.serial_path = os.path.join(wdir, f"{name}.serial")
        self.serial_log = os.path.join(wdir, f"{name}.console.log")
        self.stderr_path = os.path.join(wdir, f"{name}.stderr")
        kit = kit or guest_kit()
        self.devices = bool(devices)
        if devices:
            # The tap lives in a namespace: one of its own if none is given.
            netns = netns or Netns(name)
            add_tap(netns)
            smp = max(smp, 2)
            # rng_core.default_quality=0: the kernel's hwrng thread does not
            # keep reading the rng, so its queue is idle between our reads.
            append = f"splitmem.devices=1 rng_core.default_quality=0 {append}"
        argv = [QEMU, "-accel", ACCEL, "-machine", "q35", "-cpu", "max",
                "-m", f"{mem_mib}M", "-smp", str(smp),
                "-nodefaults", "-display", "none", "-vga", "none",
                "-kernel", os.path.join(kit, "vmlinuz"),
                "-initrd", os.path.join(kit, "initrd.gz"),
                "-append", f"console=ttyS0 loglevel=4 {append}".strip(),
                "-chardev", f"socket,id=ser0,path={self.serial_path},"
                            "server=on,wait=off",
                "-serial", "chardev:ser0",
                "-qmp", f"unix:{self.qmp_path},server=on,wait=off"]
        if incoming:
            argv += ["-incoming", incoming]
        if devices:
            argv += device_args(devices)
        argv += extra or []
        self.stderr = open(self.stderr_path, "w")
        popen = netns.popen if netns else subprocess.Popen
        self.proc = popen(argv, stdin=subprocess.DEVNULL,
                          stdout=self.stderr, stderr=subprocess.STDOUT)
        at_cleanup(self.kill)
        _vms.append(self)
        self.qmp = QMP(self.qmp_path, alive=self._check_alive)
        self.serial = Serial(self.serial_path, self.serial_log, echo=echo)

    def _check_alive(self):
        """Raise with QEMU's own words if it exited; False otherwise."""
        if self.proc.poll() is not None:
            raise RuntimeError(f"QEMU ({self.name}) exited with "
                               f"{self.proc.returncode}: {self.stderr_text()}")
        return False

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def quit(self):
        try:
            self.qmp.cmd("quit")
        except (QMPError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()

    def stderr_text(self):
        with open(self.stderr_path) as f:
            return f.read()

    def balloon_stats(self, interval=2):
        """Turn on the balloon's stats polling (every interval seconds);
        the interval is host state that migration does not carry, so each
        host sets its own."""
        self.qmp.cmd("qom-set", path=f"/machine/peripheral/"
                     f"{DEVICE_IDS['balloon']}",
                     property="guest-stats-polling-interval", value=interval)

    def guest_stats(self):
        return self.qmp.cmd("qom-get", path=f"/machine/peripheral/"
                            f"{DEVICE_IDS['balloon']}", property="guest-stats")

    def balloon_to(self, size, timeout=120):
        """Ask the balloon for a guest of size bytes; wait until the guest
        got there (query-balloon 'actual' within 2 MiB)."""
        self.qmp.cmd("balloon", value=size)
        return wait_for(lambda: abs(self.qmp.cmd("query-balloon")["actual"]
                                    - size) <= (2 << 20) and True,
                        timeout, f"the balloon to reach {size >> 20} MiB",
                        interval=0.5)

    def page_locations(self, gpas):
        """{GPA: x-query-split-page-locations entry} (at most 4096 a call)."""
        out = {}
        gpas = list(gpas)
        for i in range(0, len(gpas), 4096):
            for e in self.qmp.cmd("x-query-split-page-locations",
                                  addresses=gpas[i:i + 4096]):
                out[e["address"]] = e
        return out

    def xp(self, gpa, words=4):
        """words 64-bit words of guest memory at gpa, through the monitor."""
        out = self.qmp.hmp(f"xp /{words}gx {gpa:#x}")
        return [int(w, 16) for line in out.splitlines()
                for w in line.split(":", 1)[1].split()]

    def devcheck(self, timeout=300):
        """One round of every device in the guest; return (ok, line)."""
        self.serial.mark()
        self.serial.send("devcheck")
        m = self.serial.wait(r"^devcheck: (OK|FAILED)[^\n]*$", timeout)
        return m.group(1) == "OK", m.group(0).strip()

    def virtio_queues(self):
        """{kind: [(queue index, {desc, avail, used GPAs}), ...]} for every
        virtio device (kind as in VIRTIO_NAMES), from x-query-virtio."""
        out = {}
        for dev in self.qmp.cmd("x-query-virtio"):
            kind = VIRTIO_NAMES.get(dev["name"])
            if not kind:
                continue
            st = self.qmp.cmd("x-query-virtio-status", path=dev["path"])
            queues = []
            for q in range(st["num-vqs"]):
                qs = self.qmp.cmd("x-query-virtio-queue-status",
                                  path=dev["path"], queue=q)
                queues.append((q, {k: qs[f"vring-{k}"]
                                   for k in ("desc", "avail", "used")}))
            out[kind] = queues
        return out

    def ram_range(self, size):
        """[start, end) of the guest RAM's host mapping: the anonymous
        read-write (not executable: TCG's code buffer can be as big) VMA
        of exactly size bytes. Call it before the RAM is used, while
        nothing (userfaultfd registration, madvise) has split it yet."""
        for start, end, perms, path, _ in self.smaps():
            if end - start == size and perms.startswith("rw-") and not path:
                return start, end
        raise RuntimeError(f"{self.name}: no {size >> 20} MiB anonymous "
                           "mapping (guest RAM) in smaps")

    def smaps(self):
        """[(start, end, perms, path, {field: bytes})] of the process."""
        vmas = []
        with open(f"/proc/{self.proc.pid}/smaps") as f:
            for line in f:
                head, _, rest = line.partition(" ")
                if "-" in head and ":" not in head:
                    a, b = head.split("-")
                    fields = rest.split()
                    vmas.append((int(a, 16), int(b, 16), fields[0],
                                 " ".join(fields[4:]), {}))
                elif vmas and rest.strip().endswith("kB"):
                    vmas[-1][4][head.rstrip(":")] = int(rest.split()[0]) << 10
        return vmas

    def ram_usage(self, rng):
        """(Rss, AnonHugePages) in bytes of the VMAs inside rng, the guest
        RAM range of ram_range() (it may since be split into several)."""
        rss = huge = 0
        for start, end, _, _, f in self.smaps():
            if start >= rng[0] and end <= rng[1]:
                rss += f.get("Rss", 0)
                huge += f.get("AnonHugePages", 0)
        return rss, huge

    def rss_bytes(self):
        """Resident memory of the QEMU process (VmRSS)."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0


class Subhost:
    """A sub-host: contrib/subhost/splitmem-subhost serving one VM's
    export (nbdkit memory plugin, PSK TLS) inside a namespace."""

    PORT = 10809

    def __init__(self, name, ns, wdir, vm, size, psk_dir, memory_limit=None):
        self.name, self.ns, self.vm = name, ns, vm
        self.pidfile = os.path.join(wdir, f"{name}.pid")
        self.log_path = os.path.join(wdir, f"{name}.log")
        argv = [os.path.join(SRCDIR, "contrib", "subhost", "splitmem-subhost"),
                "--vm", vm, "--size", str(size),
                "--listen", f"0.0.0.0:{self.PORT}", "--tls-psk", psk_dir,
                "--memory-limit", str(memory_limit or size + (64 << 20)),
                "--cgroup", f"/splitmem-test-{os.getpid()}-{name}",
                "--pidfile", self.pidfile]
        self.log = open(self.log_path, "w")
        self.proc = ns.popen(argv, stdin=subprocess.DEVNULL, stdout=self.log,
                             stderr=subprocess.STDOUT)
        at_cleanup(self.stop)
        wait_for(lambda: self._ready(), 30, f"sub-host {name} to listen")

    def _ready(self):
        if self.proc.poll() is not None:
            with open(self.log_path) as f:
                raise RuntimeError(f"sub-host {self.name} exited: {f.read()}")
        return os.path.exists(self.pidfile) and os.path.getsize(self.pidfile)

    def pid(self):
        with open(self.pidfile) as f:
            return int(f.read().split()[0])

    def rss_bytes(self):
        try:
            with open(f"/proc/{self.pid()}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError):
            pass
        return 0

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:
            os.kill(self.pid(), signal.SIGKILL)
        except (OSError, ValueError):
            pass


def psk_credentials(wdir, identities):
    """A QEMU tls-creds-psk directory holding a key for each identity,
    plus one directory per identity holding only its own line (what that
    VM's sub-host export accepts). Returns (dir, {identity: dir})."""
    import secrets
    keys = {ident: secrets.token_hex(32) for ident in identities}
    all_dir = os.path.join(wdir, "psk")
    os.makedirs(all_dir, mode=0o700, exist_ok=True)
    with open(os.open(os.path.join(all_dir, "keys.psk"),
                      os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
        for ident, key in keys.items():
            f.write(f"{ident}:{key}\n")
    one = {}
    for ident, key in keys.items():
        d = os.path.join(wdir, f"psk-{ident}")
        os.makedirs(d, mode=0o700, exist_ok=True)
        with open(os.open(os.path.join(d, "keys.psk"),
                          os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(f"{ident}:{key}\n")
        one[ident] = d
    return all_dir, one


def fmt_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return f"{n} B"
