"""W6 control latency and W5 stop-all on one instance per (subject, N), then
W5 shutdown of the supervisor itself on a fresh instance.

W6: the wall time of the supervisor's own status command (a new client
process each time, as a user or a script would run it); for blackhole also
the raw API round trip on its socket. W5: from the stop request until every
service process has exited (kernel exit events); the command's own return
time is kept as a second figure.
"""

import os
import signal
import time

from . import procs
from .bh_events import follow_events, state_times
from .common import pause_services, percentile, session, supervisor_pids, wait_control_ready, wait_until
from .subjects import Svc
from .unixhttp import UnixHTTP


def api_get(sock_path, path):
    conn = UnixHTTP(sock_path)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, body
    finally:
        conn.close()


def control(ctx, cls, n, w5, w6):
    trials = 10 if ctx.opts.quick else 50
    with session(ctx, cls, f"ctl{n}", pause_services(n, cls.is_baseline)) as s:
        s.launch()
        if ctx.events.wait_count(n, timeout=300) is None:
            ctx.note("W5/W6", s.name, f"the {n} services did not all come up")
            return
        if not wait_control_ready(ctx, s):
            ctx.note("W5/W6", s.name, "the status command never succeeded")
            return
        time.sleep(1.0)
        if w6 and s.status_cmd():
            k50 = ctx.metric(f"W6.p50.{n}", "W6", f"W6 status round trip p50, {n} services", "ms", "{:.1f}")
            k99 = ctx.metric(f"W6.p99.{n}", "W6", f"W6 status round trip p99, {n} services", "ms", "{:.1f}")
            times, failed = [], 0
            for _ in range(trials):
                dt, cp = s.cmd(s.status_cmd())
                times.append(dt * 1000)
                failed += cp.returncode != 0
            if failed:
                ctx.note("W6", s.name, f"{failed} of {trials} status commands exited non-zero")
            ctx.record(k50, s.name, percentile(times, 50))
            ctx.record(k99, s.name, percentile(times, 99))
            ctx.log(f"    {s.name} N={n}: status p50 {percentile(times, 50):.1f} ms, p99 {percentile(times, 99):.1f} ms")
            if s.name == "blackhole":
                a50 = ctx.metric(f"W6.api50.{n}", "W6", f"W6 raw API GET /v1/services p50, {n} services", "ms",
                                 "{:.2f}", ratios=False)
                a99 = ctx.metric(f"W6.api99.{n}", "W6", f"W6 raw API GET /v1/services p99, {n} services", "ms",
                                 "{:.2f}", ratios=False)
                api = []
                for _ in range(trials):
                    t0 = procs.now_ns()
                    status, _ = api_get(s.socket(), "/v1/services")
                    api.append((procs.now_ns() - t0) / 1e6)
                    assert status == 200, status
                ctx.record(a50, s.name, percentile(api, 50))
                ctx.record(a99, s.name, percentile(api, 99))
                ctx.log(f"    {s.name} N={n}: raw API p50 {percentile(api, 50):.2f} ms, p99 {percentile(api, 99):.2f} ms")
        if not w5:
            return
        k_stop = ctx.metric(f"W5.stop.{n}", "W5", f"W5 stop all {n} services: until all are gone", "ms", "{:.0f}")
        k_cmd = ctx.metric(f"W5.stopcmd.{n}", "W5", f"W5 stop all {n} services: the stop command returns", "ms",
                           "{:.0f}")
        events = follow_events(s) if s.name == "blackhole" and ctx.opts.explain else None
        t0 = procs.now_ns()
        patience = 120
        if s.is_baseline:
            os.kill(s.main_pid(), signal.SIGTERM)  # the baseline stops its children on SIGTERM
        elif s.stop_all_cmd():
            dt, cp = s.cmd(s.stop_all_cmd())
            ctx.record(k_cmd, s.name, dt * 1000)
            if cp.returncode != 0:
                err = cp.stderr.decode().strip().splitlines()
                ctx.note("W5", s.name, f"stop-all exited {cp.returncode} after {dt:.1f} s; {len(err)} lines on "
                         f"stderr, the last: {err[-1] if err else ''}")
                patience = 10  # it failed: do not wait long for what it may not have stopped
        else:
            ctx.note("W5", s.name, "no command to stop all services; skipped")
            return
        t_gone = ctx.events.wait_none_live(timeout=patience)
        if t_gone is None:
            why = f"{len(ctx.events.live_pids())} services still alive {patience} s after stop-all"
            ctx.note("W5", s.name, why)
            ctx.fail(k_stop, s.name, why)
            return
        ctx.record(k_stop, s.name, (t_gone - t0) / 1e6)
        ctx.log(f"    {s.name} N={n}: stop-all, all gone after {(t_gone - t0) / 1e6:.0f} ms")
        if events is not None:
            time.sleep(0.5)
            explain_stop(ctx, "W5", f"stop-all of {n}", events, t0, t_gone)


def explain_stop(ctx, workload, what, events, t0, t_gone):
    """When blackhole reported its services stopping and stopped, against when they were gone."""
    stopping = state_times(events, t0, "stopping")
    stopped = state_times(events, t0, "stopped")
    if not stopped:
        return
    ctx.note(workload, "blackhole",
             f"{what}: last process exited at {(t_gone - t0) / 1e6:.0f} ms; events read: "
             f"first 'stopping' {min(stopping, default=float('nan')):.0f} ms, "
             f"last 'stopping' {max(stopping, default=float('nan')):.0f} ms, "
             f"first 'stopped' {min(stopped):.0f} ms, last 'stopped' {max(stopped):.0f} ms "
             f"({len(stopped)} services)")


def shutdown(ctx, cls, n=100):
    k = ctx.metric(f"W5.shutdown.{n}", "W5", f"W5 shut the supervisor down with {n} services", "ms", "{:.0f}")
    with session(ctx, cls, f"down{n}", pause_services(n, cls.is_baseline)) as s:
        s.launch()
        if ctx.events.wait_count(n, timeout=300) is None:
            ctx.note("W5", s.name, "the services did not all come up")
            return
        wait_control_ready(ctx, s)
        time.sleep(1.0)
        sup = supervisor_pids(ctx)
        events = follow_events(s) if s.name == "blackhole" and ctx.opts.explain else None
        t0 = procs.now_ns()
        s.shutdown()
        t_svc = ctx.events.wait_none_live(timeout=120)
        t_sup = ctx.events.wait_exited(sup, timeout=120)
        if t_svc is None or t_sup is None:
            alive = [p for p in sup if p not in ctx.events.exits]
            why = (f"shutdown incomplete after 120 s: {len(ctx.events.live_pids())} services, "
                   f"{len(alive)} supervisor processes alive")
            ctx.note("W5", s.name, why)
            ctx.fail(k, s.name, why)
            return
        ctx.record(k, s.name, (max(t_svc, t_sup) - t0) / 1e6)
        ctx.log(f"    {s.name}: shutdown with {n} services took {(max(t_svc, t_sup) - t0) / 1e6:.0f} ms")
        if events is not None:
            explain_stop(ctx, "W5", f"shutdown with {n} (supervisor exited at {(t_sup - t0) / 1e6:.0f} ms)",
                         events, t0, t_svc)


def kill_at_timeout(ctx, cls, timeout_s=1):
    """A service that ignores SIGTERM is SIGKILLed when its stop timeout runs
    out: how long after the timeout it was gone. Both ends come from the
    kernel's monotonic clock: the service writes down when SIGTERM reached it
    (`ignore-term` mode), and its exit is a kernel process event. The figure
    therefore includes the kernel's own time to tear the process down after
    the SIGKILL. The same figure counted from the stop request (a CLI
    process, a socket round trip before the SIGTERM) is kept as an upper
    bound. blackhole only: the target is its own, and the peers' stop
    commands differ in what they wait for."""
    if cls.name != "blackhole":
        return
    trials = 5 if ctx.opts.quick else 20
    what = f"W5 SIGTERM ignored, stop_timeout {timeout_s} s: gone after the timeout"
    k50 = ctx.metric("W5.kill50", "W5", f"{what}, median", "ms", "{:.1f}", ratios=False)
    kmax = ctx.metric("W5.killmax", "W5", f"{what}, farthest either way", "ms", "{:.1f}", ratios=False)
    kreq = ctx.metric("W5.killreq50", "W5", f"{what}, counted from the stop request, median", "ms", "{:.1f}",
                      ratios=False)
    svc = Svc("ign", ["--service", "ign", "ignore-term"], restart=False)
    marker = "SIGTERM ignored at monotonic "

    def log_text():
        return "".join(f.read_text() for f in s.log_files("ign"))

    with session(ctx, cls, "killat", [svc]) as s:
        conf = s.conf()
        conf.write_text(conf.read_text().replace("[services.ign]\n", f'[services.ign]\nstop_timeout = "{timeout_s}s"\n'))
        s.launch()
        late, from_request = [], []
        for trial in range(trials):
            # SIGTERM must find the service waiting for it: wait for its line.
            ready = wait_until(lambda: log_text().count("ignoring SIGTERM") > trial, timeout=30)
            if not ready or ctx.events.wait_count(1, timeout=30) is None:
                ctx.note("W5", s.name, f"kill at timeout: the service did not come up for trial {trial + 1}")
                return
            t0 = procs.now_ns()
            s.cmd(s.stop_cmd("ign"))
            t_gone = ctx.events.wait_none_live(timeout=timeout_s + 30)
            if t_gone is None:
                ctx.fail(k50, s.name, "the service outlived its stop timeout by 30 s")
                return
            got = wait_until(lambda: [int(line.split(marker)[1].split()[0]) for line in log_text().splitlines()
                                      if marker in line][trial:], timeout=5)
            if not got:
                ctx.note("W5", s.name, f"kill at timeout: the service never said when SIGTERM came (trial {trial + 1})")
                return
            late.append((t_gone - got[0]) / 1e6 - timeout_s * 1000)
            from_request.append((t_gone - t0) / 1e6 - timeout_s * 1000)
            s.cmd(s.bh("start", "ign"))
        ctx.record(k50, s.name, percentile(late, 50))
        ctx.record(kmax, s.name, max(late, key=abs))
        ctx.record(kreq, s.name, percentile(from_request, 50))
        early = [x for x in late if x < 0]
        if early:
            ctx.note("W5", s.name, f"kill at timeout: {len(early)} of {trials} were gone before the timeout")
        ctx.log(f"    {s.name}: SIGTERM ignored, gone {percentile(late, 50):.1f} ms after the {timeout_s} s timeout "
                f"(median of {trials}; earliest {min(late):.1f}, latest {max(late):.1f}; from the request "
                f"{percentile(from_request, 50):.1f})")
