"""W3 restart latency: SIGKILL the one running service, time until a new
process has exec'd the service program (both instants from the kernel)."""

import os
import signal
import statistics
import time

from .common import pause_services, percentile, session
from .bh_events import follow_events

GRACE_S = 0.02  # a run script's own exec precedes the program's: wait for the last one


def run(ctx, cls):
    trials = 10 if ctx.opts.quick else 50
    keys = {p: ctx.metric(f"W3.p{p}", "W3", f"W3 restart latency p{p} ({trials} kills)", "ms", "{:.2f}")
            for p in (50, 95, 99)}
    services = pause_services(1)
    services[0].fastest = True
    with session(ctx, cls, "restart", services) as s:
        s.launch()
        if ctx.events.wait_count(1, timeout=60) is None:
            ctx.note("W3", s.name, "the service never came up")
            return
        lat, misses, kills = [], 0, []
        events = follow_events(s) if s.name == "blackhole" and ctx.opts.explain else None
        for _ in range(trials):
            # Let it run past the peer's "died too soon" rule (see restart_floor).
            time.sleep(s.restart_settle)
            live = ctx.events.live_pids()
            if len(live) != 1:
                ctx.note("W3", s.name, f"{len(live)} instances alive before a kill")
                break
            (victim,) = live
            t_kill = time.monotonic_ns()
            os.kill(victim, signal.SIGKILL)
            kills.append(t_kill)
            got = ctx.events.wait_exec_after(t_kill, {victim}, timeout=15)
            if got is None:
                misses += 1
                ctx.note("W3", s.name, "no restart within 15 s")
                break
            time.sleep(GRACE_S)
            ts = ctx.events.last_exec(got[1], got[0])
            lat.append((ts - t_kill) / 1e6)
        if lat:
            for p, k in keys.items():
                ctx.record(k, s.name, percentile(lat, p))
            ctx.log(f"    {s.name}: restart p50 {percentile(lat, 50):.2f} ms, p99 {percentile(lat, 99):.2f} ms, "
                    f"min {min(lat):.2f}, max {max(lat):.2f} over {len(lat)} kills")
        if events is not None and kills:
            breakdown(ctx, events, kills)


def breakdown(ctx, events, kills):
    """Median time from each kill to the first event of each kind that followed it."""
    bounds = kills[1:] + [float("inf")]
    per_state = {}
    for t_kill, t_next in zip(kills, bounds):
        seen = set()
        for t, ev in events:
            if t_kill <= t < t_next and ev.get("kind") == "state" and ev.get("to") not in seen:
                seen.add(ev["to"])
                per_state.setdefault(ev["to"], []).append((t - t_kill) / 1e6)
    steps = sorted(per_state.items(), key=lambda kv: statistics.median(kv[1]))
    text = ", ".join(f"{state} seen at {statistics.median(v):.2f} ms" for state, v in steps)
    ctx.note("W3", "blackhole", f"events after a kill (median over {len(kills)}, as read by a client): {text}")
