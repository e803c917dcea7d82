"""W1 start-up and memory, W2 idle cost: one supervisor instance per (subject, N).

W1: from launching the supervisor until N service processes have exec'd the
service program (kernel exec events), then RSS and PSS of every supervisor
process once steady. W2, on the same instance: CPU time and context switches
of every supervisor process over an idle window.
"""

import time

from . import procs
from .common import memory, pause_services, session, supervisor_pids

STEADY_S = 2.0  # after the last start, before memory is read


def run(ctx, cls, n, w1, w2):
    idle_s = 5 if ctx.opts.quick else 30
    if w1:
        k_start = ctx.metric(f"W1.start.{n}", "W1", f"W1 start-up, {n} services", "ms")
        k_rss = ctx.metric(f"W1.rss.{n}", "W1", f"W1 RSS of the supervisor, {n} services", "MiB")
        k_pss = ctx.metric(f"W1.pss.{n}", "W1", f"W1 PSS of the supervisor, {n} services", "MiB")
    if w2:
        k_cpu = ctx.metric(f"W2.cpu.{n}", "W2", f"W2 idle CPU over {idle_s} s, {n} services", "ms", "{:.2f}")
        k_wake = ctx.metric(f"W2.wake.{n}", "W2", f"W2 idle wake-ups over {idle_s} s, {n} services", "",
                            "{:.0f}")
        k_rss2 = ctx.metric(f"W2.rss.{n}", "W2", f"W2 RSS after idling, {n} services", "MiB")

    with session(ctx, cls, f"start{n}", pause_services(n, cls.is_baseline)) as s:
        t0 = procs.now_ns()
        s.launch()
        t_all = ctx.events.wait_count(n, timeout=300)
        if t_all is None:
            got = len(ctx.events.live_pids())
            ctx.note("W1", s.name, f"only {got} of {n} services came up within 300 s")
            return
        # Cross-check the event stream against /proc: N live, non-zombie descendants.
        live = procs.live_instances(ctx.env.program)
        if len(live) < n:
            ctx.note("W1", s.name, f"/proc shows {len(live)} live instances, expected {n}")
        if w1:
            ctx.record(k_start, s.name, (t_all - t0) / 1e6)
        time.sleep(STEADY_S)
        sup = supervisor_pids(ctx)
        rss, pss = memory(sup)
        if w1:
            ctx.record(k_rss, s.name, rss)
            ctx.record(k_pss, s.name, pss)
            ctx.log(f"    {s.name} N={n}: start-up {(t_all - t0) / 1e6:.1f} ms, "
                    f"RSS {rss:.1f} MiB, PSS {pss:.1f} MiB over {len(sup)} process(es)")
        if not w2:
            return
        a = procs.cpu_sample(sup)
        time.sleep(idle_s)
        b = procs.cpu_sample(sup)
        d = procs.cpu_delta(a, b)
        ctx.record(k_cpu, s.name, d["cpu_ms"])
        ctx.record(k_wake, s.name, d["wakeups"])
        ctx.record(k_rss2, s.name, memory(sup)[0])
        if d["threads_vanished"]:
            ctx.note("W2", s.name, f"{d['threads_vanished']} thread(s) ended during the idle window; "
                     f"their CPU is not counted (tick-based total: {d['cpu_ticks_ms']:.0f} ms)")
        ctx.log(f"    {s.name} N={n}: idle {idle_s} s: CPU {d['cpu_ms']:.2f} ms, "
                f"{d['wakeups']} wake-ups")
