"""Process plumbing: subreaping, cleanup, /proc readers and kernel process events.

Everything the harness starts must end with it. The harness is a child
subreaper, so whatever a supervisor orphans (daemons, services of a killed
supervisor) is re-parented here rather than to PID 1 (which never reaps on
this machine); `sweep()` then kills and reaps every descendant.
"""

import ctypes
import os
import signal
import socket
import struct
import threading
import time
from pathlib import Path

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_CHILD_SUBREAPER = 36
PR_SET_PDEATHSIG = 1
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def become_subreaper():
    if _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def die_with_parent():
    """preexec_fn: a supervisor dies if the harness is SIGKILLed, so it cannot outlive us."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def now_ns():
    # CLOCK_MONOTONIC: the same clock as the proc connector's event timestamps.
    return time.monotonic_ns()


# ---------------------------------------------------------------- /proc readers

def pids():
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def stat(pid):
    """(ppid, state, utime+stime in ticks) or None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # comm may contain spaces and parentheses: split after the last ')'.
    rest = data[data.rindex(b")") + 2:].split()
    return int(rest[1]), rest[0].decode(), int(rest[11]) + int(rest[12])


def exe(pid):
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0")[:-1]]
    except OSError:
        return []


def process_table():
    """{pid: (ppid, state)} for every process."""
    table = {}
    for pid in pids():
        st = stat(pid)
        if st:
            table[pid] = (st[0], st[1])
    return table


def descendants(root=None, table=None):
    """Every process below `root` (default: the harness), zombies included."""
    root = root or os.getpid()
    table = table if table is not None else process_table()
    children = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def live_instances(program, table=None):
    """Non-zombie descendants of the harness running `program` (an absolute path)."""
    table = table if table is not None else process_table()
    return [p for p in descendants(table=table) if table[p][1] != "Z" and exe(p) == program]


def reap_orphans():
    """waitpid() our zombie children: orphans re-parented to us by the subreaper flag."""
    me = os.getpid()
    for pid, (ppid, state) in process_table().items():
        if ppid == me and state == "Z":
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


def sweep(timeout=10.0):
    """SIGKILL every descendant and reap it; returns how many were found alive at first."""
    deadline = time.monotonic() + timeout
    first = None
    while True:
        table = process_table()
        alive = [p for p in descendants(table=table) if table[p][1] != "Z"]
        if first is None:
            first = len(alive)
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        reap_orphans()
        if not descendants() or time.monotonic() > deadline:
            return first
        time.sleep(0.02)


def kill_group(pid, sig=signal.SIGKILL):
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# ------------------------------------------------------------ resource figures

def rss_kib(pid):
    """(VmRSS, Pss) in KiB, from status and smaps_rollup."""
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def cpu_sample(pid_list):
    """Per-thread CPU (ns, from schedstat) and context switches, to diff later.

    /proc/PID/stat counts in 10 ms ticks, too coarse for a "< 1 ms over 30 s"
    target; schedstat's first field is the thread's exact runtime in ns.
    Context switches are per thread too (/proc/PID/status shows only the
    main thread's), so both are summed over /proc/PID/task/*.
    """
    threads = {}
    ticks = 0
    for pid in pid_list:
        st = stat(pid)
        if st:
            ticks += st[2]
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            base = f"/proc/{pid}/task/{tid}"
            try:
                run_ns = int(Path(base + "/schedstat").read_text().split()[0])
                vol = invol = 0
                for line in Path(base + "/status").read_text().splitlines():
                    if line.startswith("voluntary_ctxt_switches:"):
                        vol = int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches:"):
                        invol = int(line.split()[1])
            except OSError:
                continue
            threads[(pid, int(tid))] = (run_ns, vol + invol)
    return {"threads": threads, "ticks": ticks}


def cpu_delta(a, b):
    """CPU ns and wake-ups between two samples; threads gone by `b` are reported apart."""
    cpu = wakeups = 0
    for key, (run_ns, switches) in b["threads"].items():
        run0, sw0 = a["threads"].get(key, (0, 0))
        cpu += run_ns - run0
        wakeups += switches - sw0
    vanished = len(set(a["threads"]) - set(b["threads"]))
    return {
        "cpu_ms": cpu / 1e6,
        "wakeups": wakeups,
        "cpu_ticks_ms": (b["ticks"] - a["ticks"]) * 1000 / CLK_TCK,
        "threads_vanished": vanished,
    }


# ---------------------------------------------------- kernel process events

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN = 1
PROC_EVENT_EXEC = 0x00000002
PROC_EVENT_EXIT = 0x80000000
SO_RCVBUFFORCE = 33


class ProcEvents:
    """Exec and exit times of processes, from the kernel (netlink proc connector).

    Polling /proc for 1000 processes costs tens of milliseconds per scan and
    competes with the supervisor for the 2 cores; the connector delivers each
    exec and exit with its CLOCK_MONOTONIC timestamp, so a measurement is
    exact and costs nothing while it waits. `program` is the service binary:
    an exec counts only when the new image is that file.
    """

    def __init__(self, program):
        self.program = program
        self.cond = threading.Condition()
        self.live = {}  # pid -> exec time of processes running `program`
        self.execs = []  # (ts, pid) of execs into `program`
        self.exits = {}  # pid -> exit time, every process
        # pid -> exit time of the processes running `program` only: "all
        # services gone" must not wait for, say, the stop command's own exit.
        self.instance_exits = {}
        self.overflow = False
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
        self.sock.bind((0, CN_IDX_PROC))
        op = struct.pack("I", PROC_CN_MCAST_LISTEN)
        cn = struct.pack("IIIIHH", CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(op), 0) + op
        self.sock.send(struct.pack("IHHII", 16 + len(cn), 3, 0, 0, 0) + cn)
        self.reader = threading.Thread(target=self._read, daemon=True, name="proc-events")
        self.reader.start()
        self.resync()

    def resync(self):
        """Forget history and take the current instances from /proc."""
        table = process_table()
        with self.cond:
            self.execs.clear()
            self.exits.clear()
            self.instance_exits.clear()
            self.overflow = False
            self.live = {p: 0 for p in live_instances(self.program, table)}

    def _read(self):
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except OSError:  # ENOBUFS: the kernel dropped events
                with self.cond:
                    self.overflow = True
                    self.cond.notify_all()
                continue
            off = 0
            while off + 16 <= len(data):
                (length,) = struct.unpack_from("I", data, off)
                ev = off + 16 + 20  # nlmsghdr, cn_msg
                what, _cpu, ts = struct.unpack_from("IIQ", data, ev)
                if what == PROC_EVENT_EXEC:
                    pid, tgid = struct.unpack_from("ii", data, ev + 16)
                    if pid == tgid and exe(pid) == self.program:
                        with self.cond:
                            self.live[pid] = ts
                            self.execs.append((ts, pid))
                            self.cond.notify_all()
                elif what == PROC_EVENT_EXIT:
                    pid, tgid = struct.unpack_from("ii", data, ev + 16)
                    if pid == tgid:
                        with self.cond:
                            self.exits[pid] = ts
                            if self.live.pop(pid, None) is not None:
                                self.instance_exits[pid] = ts
                            self.cond.notify_all()
                off += max(length, 16)

    def _wait(self, done, timeout):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not (result := done()):
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)
            return result

    def wait_count(self, n, timeout):
        """Time at which `n` instances were alive at once, or None."""

        def done():
            if len(self.live) >= n:
                return max(self.live.values())
            return None

        return self._wait(done, timeout)

    def wait_exec_after(self, since_ns, exclude, timeout):
        """First exec into `program` after `since_ns` by a pid not in `exclude`: (ts, pid)."""

        def done():
            for ts, pid in self.execs:
                if ts >= since_ns and pid not in exclude:
                    return ts, pid
            return None

        return self._wait(done, timeout)

    def wait_none_live(self, timeout):
        """Time the last instance exited, or None."""

        def done():
            if not self.live:
                return max(self.instance_exits.values(), default=now_ns())
            return None

        return self._wait(done, timeout)

    def wait_exited(self, pid_list, timeout):
        """Time the last of `pid_list` exited (dead, reaped or not), or None."""

        def done():
            if all(p in self.exits for p in pid_list):
                return max((self.exits[p] for p in pid_list), default=now_ns())
            return None

        return self._wait(done, timeout)

    def last_exec(self, pid, default):
        """The latest exec into `program` by `pid` (a run script execs before the program does)."""
        with self.cond:
            return max((ts for ts, p in self.execs if p == pid), default=default)

    def exec_times(self):
        """{pid: first exec into `program`} since the last resync."""
        with self.cond:
            out = {}
            for ts, pid in self.execs:
                out.setdefault(pid, ts)
            return out

    def exits_of_execs(self):
        """{pid: exit time} of the processes that exec'd `program` since the last resync."""
        with self.cond:
            return {pid: self.exits[pid] for _, pid in self.execs if pid in self.exits}

    def live_pids(self):
        with self.cond:
            return dict(self.live)
