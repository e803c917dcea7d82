"""W4 log throughput: writers print L lines of 100 bytes as fast as they can.

Timed from the first writer's exec until every line is in the supervisor's
log files (counted by reading them as they grow), next to the writers' own
runtime (exec to exit, from kernel events). Lines lost = printed - counted.
"""

import time

from .common import session, wait_until
from .subjects import Svc

TOKEN = b"line "  # once per printed line whatever prefix the supervisor adds
QUIET_S = 5.0  # writers done and no growth for this long: the rest is lost


class LineCounter:
    """Counts printed lines in growing files without re-reading them."""

    def __init__(self, subject, names):
        self.subject, self.names = subject, names
        self.offsets, self.tails = {}, {}
        self.count = 0
        self.files = []

    def poll(self):
        # Looked up on every poll: files appear late and rotation adds some.
        self.files = [f for n in self.names for f in self.subject.log_files(n)]
        grew = False
        for f in self.files:
            try:
                with open(f, "rb") as fh:
                    fh.seek(self.offsets.get(f, 0))
                    data = fh.read()
            except OSError:
                continue
            if not data:
                continue
            grew = True
            self.offsets[f] = self.offsets.get(f, 0) + len(data)
            # Keep 4 bytes of the previous read so a token split between reads counts once.
            buf = self.tails.get(f, b"") + data
            self.count += buf.count(TOKEN)
            self.tails[f] = buf[-(len(TOKEN) - 1):]
        return grew


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
        s.launch()
        s.start_once([sv.name for sv in services])  # runit and s6: a never-restarted service starts on request
        if ctx.events.wait_exec_after(0, set(), timeout=60) is None:
            ctx.note("W4", s.name, "no writer started")
            return
        counter = LineCounter(s, [sv.name for sv in services])
        expected = writers * lines
        deadline = time.monotonic() + timeout
        last_growth = time.monotonic()
        t_done = None
        while time.monotonic() < deadline:
            if counter.poll():
                last_growth = time.monotonic()
            if counter.count >= expected:
                t_done = time.monotonic_ns()
                break
            writers_done = len(ctx.events.exits_of_execs()) >= writers
            if writers_done and time.monotonic() - last_growth > QUIET_S:
                break
            time.sleep(0.005)
        # Lines can all be in before the last writer has exited: wait for the exits.
        wait_until(lambda: len(ctx.events.exits_of_execs()) >= writers or None, 30)
        execs = ctx.events.exec_times()
        t_first = min(execs.values())
        exits = ctx.events.exits_of_execs()
        lost = expected - counter.count
        if t_done is None:
            why = "timed out" if time.monotonic() >= deadline else "output stopped"
            ctx.note("W4", s.name, f"{label}: {why} with {counter.count:,} of {expected:,} lines in the log")
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
