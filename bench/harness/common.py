"""What every workload shares: the run context, sessions (one supervisor
instance from setup to teardown) and the result store."""

import itertools
import os
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from . import procs
from .subjects import Svc

# blackhole's folders in every hierarchy: v2 (pure or hybrid), and the v1
# controllers of a hybrid host, where it makes its instance folder too.
CGROUP_ROOTS = [Path("/sys/fs/cgroup/unified/blackhole"), Path("/sys/fs/cgroup/blackhole")] + [
    Path(f"/sys/fs/cgroup/{c}/blackhole") for c in ("memory", "cpu", "cpu,cpuacct", "pids", "freezer")
]


@dataclass
class Metric:
    key: str
    workload: str
    label: str
    unit: str
    fmt: str = "{:.1f}"
    ratios: bool = True  # show peer/blackhole and blackhole/baseline


@dataclass
class Ctx:
    env: object  # subjects.Env
    events: procs.ProcEvents
    workroot: Path
    subjects: list  # adapter classes, baseline and blackhole first
    opts: object  # argparse namespace (quick, runs, ...)
    metrics: dict = field(default_factory=dict)  # key -> Metric, in report order
    values: dict = field(default_factory=dict)  # (key, subject) -> [value per run]
    notes: list = field(default_factory=list)  # (workload, subject, text)
    probes: dict = field(default_factory=dict)  # (probe, subject) -> (ok, detail)
    skipped: dict = field(default_factory=dict)  # subject -> reason
    background: list = field(default_factory=list)  # machine load when each session began
    gave_up_waiting: bool = False
    failed: dict = field(default_factory=dict)  # (key, subject) -> why there is no figure

    def metric(self, key, workload, label, unit, fmt="{:.1f}", ratios=True):
        if key not in self.metrics:
            self.metrics[key] = Metric(key, workload, label, unit, fmt, ratios)
        return key

    def record(self, key, subject, value):
        self.values.setdefault((key, subject), []).append(value)

    def fail(self, key, subject, reason):
        """The subject could not produce this figure: shown as failed, and a target on it is missed."""
        self.failed[(key, subject)] = reason

    def note(self, workload, subject, text):
        print(f"    note: {subject}: {text}", flush=True)
        self.notes.append((workload, subject, text))

    def median(self, key, subject):
        vals = [v for v in self.values.get((key, subject), []) if v is not None]
        return statistics.median(vals) if vals else None

    def log(self, text):
        print(text, flush=True)


def pause_services(n, single_command=False):
    """N trivial long-running services; the baseline runs N copies of one command."""
    return [
        Svc(f"s{i:04d}", ["--service", "base" if single_command else f"s{i:04d}", "pause"]) for i in range(n)
    ]


def percentile(values, p):
    """Nearest-rank percentile (no interpolation: every figure is a measured one)."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def supervisor_pids(ctx):
    """Every live process of the harness's tree that is not a service: the supervisor's own."""
    table = procs.process_table()
    return [
        p
        for p in procs.descendants(table=table)
        if table[p][1] != "Z" and procs.exe(p) != ctx.env.program
    ]


def memory(pid_list):
    rss = pss = 0
    for pid in pid_list:
        r, p = procs.rss_kib(pid)
        rss += r
        pss += p
    return rss / 1024, pss / 1024  # MiB


def remove_blackhole_cgroups(prefix):
    """blackhole leaves its cgroup folder behind when it is SIGKILLed: remove ours (empty ones)."""
    for root in CGROUP_ROOTS:
        if not root.is_dir():
            continue
        for inst in root.glob(prefix + "*"):
            for sub in sorted(inst.glob("*/"), reverse=True):
                if sub.is_dir():
                    try:
                        sub.rmdir()
                    except OSError:
                        pass
            try:
                inst.rmdir()
            except OSError:
                pass


def cpu_busy(interval=1.0):
    """Fraction of all CPUs busy over `interval`, from /proc/stat."""

    def sample():
        f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = f[3] + f[4]  # idle + iowait
        return sum(f), idle

    t0, i0 = sample()
    time.sleep(interval)
    t1, i1 = sample()
    return 1 - (i1 - i0) / max(t1 - t0, 1)


def wait_for_quiet(ctx, what, limit=0.15, patience=120):
    """Before a session: wait (up to `patience` s) until other load on the
    machine is low. A shared machine running a build would otherwise decide
    the figures. Once a wait has been in vain, later sessions wait 10 s at
    most, so a long busy stretch does not stall the run. Returns the busy
    fraction the session started with."""
    if ctx.gave_up_waiting:
        patience = 10
    deadline = time.monotonic() + patience
    busy = cpu_busy()
    waited = False
    while busy > limit and time.monotonic() < deadline:
        if not waited:
            ctx.log(f"    (machine {busy:.0%} busy before {what}: waiting for it to calm down)")
            waited = True
        time.sleep(2)
        busy = cpu_busy()
    if busy > limit:
        ctx.gave_up_waiting = True
        ctx.note("load", what, f"started with the machine {busy:.0%} busy after waiting {patience} s")
    if busy <= limit:
        ctx.gave_up_waiting = False
    ctx.background.append({"session": what, "busy": round(busy, 3)})
    return busy


@contextmanager
def session(ctx, cls, tag, services, stop_timeout=10):
    """One supervisor instance: configured, handed to the workload, then torn down.

    Teardown SIGKILLs every process the harness has below it, whatever the
    workload did or failed to do, and reaps them: nothing outlives a session.
    """
    subject = cls(ctx.env)
    if not ctx.opts.no_wait:
        wait_for_quiet(ctx, f"{subject.name} {tag}")
    workdir = ctx.workroot / f"bhbench-{subject.name}-{tag}-{next(_SESSIONS)}"
    subject.setup(workdir, services, stop_timeout)
    ctx.events.resync()
    try:
        yield subject
    finally:
        procs.sweep()
        remove_blackhole_cgroups("bhbench-")
        if not ctx.opts.keep:
            drop_large_files(workdir)


# Each session gets a folder of its own, removed with the whole work folder
# at the end of the run (see drop_large_files).
_SESSIONS = itertools.count(1)


def drop_large_files(root, above=1 << 20):
    """Frees the disk a session filled (W4 writes gigabytes) but keeps its
    small files until the run ends. Deleting thousands of small files makes
    file creation slow for a while on ext4 without a journal, as on these
    VMs: inode allocation then skips every recently deleted inode
    (`recently_deleted` in ext4's ialloc.c). One subject's cleanup would be
    charged to the next subject's start-up: blackhole's 1000 log files took
    its log writer 370-670 ms of CPU right after other sessions' cleanup,
    45-50 ms on a fresh tmpfs."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            try:
                if os.lstat(path).st_size > above:
                    os.unlink(path)
            except OSError:
                pass


def wait_until(pred, timeout, step=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if v := pred():
            return v
        time.sleep(step)
    return None


def wait_control_ready(ctx, subject, timeout=60):
    """Until the supervisor's status command succeeds (its control interface is up)."""
    cmd = subject.status_cmd()
    if not cmd:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _, cp = subject.cmd(cmd)
            if cp.returncode == 0:
                return True
        except Exception:
            pass
        time.sleep(0.1)
    return False


def env_dump():
    """Machine facts for the report."""
    import platform
    import subprocess

    def sh(cmd):
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
        except Exception:
            return "?"

    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "cpu": sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip(),
        "os": sh(". /etc/os-release && echo $PRETTY_NAME"),
        "cargo": sh("cargo --version"),
        "python": platform.python_version(),
    }
