"""W4 log throughput: writers print L lines of 100 bytes as fast as they can.

Timed from the first writer's exec until the supervisor's log files stop
growing with every line in them (sizes are polled during the run, lines are
counted after it), next to the writers' own runtime (exec to last exit, from
kernel events). Lines lost = printed - counted.
"""

import os
import subprocess
import time

from .common import session
from .subjects import Svc

TOKEN = b"line "  # once per printed line whatever prefix the supervisor adds
SETTLE_S = 2.0  # writers gone and the files unchanged this long: the output is complete
POLL_S = 0.003
# Bytes of memory a trial may need per printed line: 100 of text, up to ~45 of
# prefix, and slack for the pipes and buffers.
WARM_PER_LINE = 160


def warm_memory(ctx, lines):
    """Touches and frees as much memory as the trial will fill, just before it.

    On these VMs memory the guest has not used for a few seconds is slow to
    touch again (the host takes back freed pages: virtio-balloon free page
    reporting), and a log trial writes gigabytes into the page cache. Without
    this, whichever subject ran first after a pause paid for it: one writer's
    log writer took 140-224 ms of CPU after a 20 s pause, 43-57 ms after
    touching 400 MiB first; a 20-writer trial's copy into the page cache
    took 6.8 times its usual samples. Every subject now starts from the same
    state."""
    mib = lines * WARM_PER_LINE >> 20
    subprocess.run([ctx.env.baseline, "touch", str(mib)], check=True)


def log_files(subject, names):
    return [f for n in names for f in subject.log_files(n)]


def total_size(files):
    size = 0
    for f in files:
        try:
            size += os.stat(f).st_size
        except OSError:
            pass
    return size


def count_lines(files):
    """Printed lines in the files. Runs after the timing: reading gigabytes
    while the writers run would take the CPU the supervisor needs."""
    count = 0
    for f in files:
        tail = b""
        with open(f, "rb") as fh:
            while chunk := fh.read(16 << 20):
                # Keep 4 bytes of the previous chunk so a token split between reads counts once.
                buf = tail + chunk
                count += buf.count(TOKEN)
                tail = buf[-(len(TOKEN) - 1):]
    return count


def run(ctx, cls, writers, lines):
    tag = f"{writers}x{lines // 1000}k"
    label = f"{writers} writer{'s' if writers > 1 else ''} x {lines:,} lines"
    k_total = ctx.metric(f"W4.total.{tag}", "W4", f"W4 {label}: until all lines are in the log", "ms", "{:.0f}")
    k_writer = ctx.metric(f"W4.writer.{tag}", "W4", f"W4 {label}: the writers' own runtime", "ms", "{:.0f}")
    k_lost = ctx.metric(f"W4.lost.{tag}", "W4", f"W4 {label}: lines lost", "", "{:.0f}", ratios=False)
    timeout = 120 if ctx.opts.quick else 600
    services = [
        Svc(f"w{i:02d}", ["--service", "writer" if cls.is_baseline else f"w{i:02d}", "print",
                          "--lines", str(lines), "--size", "100"], restart=False, log=True)
        for i in range(writers)
    ]
    with session(ctx, cls, f"logs{tag}", services) as s:
        warm_memory(ctx, writers * lines)
        s.launch()
        s.start_once([sv.name for sv in services])  # runit and s6: a never-restarted service starts on request
        if ctx.events.wait_exec_after(0, set(), timeout=60) is None:
            ctx.note("W4", s.name, "no writer started")
            return
        # While it runs only the files' sizes are watched (cheap); the time of
        # the last growth is when the last line landed.
        names = [sv.name for sv in services]
        deadline = time.monotonic() + timeout
        size, t_last_growth, quiet_since = 0, None, time.monotonic()
        while time.monotonic() < deadline:
            now_size = total_size(log_files(s, names))
            if now_size != size:
                size, t_last_growth, quiet_since = now_size, time.monotonic_ns(), time.monotonic()
            writers_done = len(ctx.events.exits_of_execs()) >= writers
            if writers_done and time.monotonic() - quiet_since > SETTLE_S:
                break
            time.sleep(POLL_S)
        expected = writers * lines
        counted = count_lines(log_files(s, names))
        t_done = t_last_growth if counted >= expected and time.monotonic() < deadline else None
        execs = ctx.events.exec_times()
        t_first = min(execs.values())
        exits = ctx.events.exits_of_execs()
        lost = expected - counted
        if t_done is None:
            why = "timed out" if time.monotonic() >= deadline else "output stopped"
            ctx.note("W4", s.name, f"{label}: {why} with {counted:,} of {expected:,} lines in the log")
            ctx.fail(k_total, s.name, why if counted >= expected else f"{expected - counted:,} lines never reached the log")
        else:
            ctx.record(k_total, s.name, (t_done - t_first) / 1e6)
        if len(exits) >= writers:
            ctx.record(k_writer, s.name, (max(exits.values()) - t_first) / 1e6)
        ctx.record(k_lost, s.name, max(lost, 0))
        if lost < 0:
            ctx.note("W4", s.name, f"{label}: {-lost} more lines than printed (duplicates)")
        total = f"{(t_done - t_first) / 1e6:.0f} ms" if t_done else "-"
        wr = f"{(max(exits.values()) - t_first) / 1e6:.0f} ms" if exits else "-"
        ctx.log(f"    {s.name} {label}: all in log after {total}, writers ran {wr}, lost {max(lost, 0)}")
