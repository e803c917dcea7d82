"""Correctness probes, yes/no per supervisor (the baseline has none of this logic).

- daemon: a service whose grandchild daemonizes (setsid, ignores SIGTERM);
  after the supervisor's stop command, is the grandchild gone?
- kill9: the supervisor is SIGKILLed; 2 s later, is every service gone?
- restart: the supervisor is SIGKILLed and started again on the same
  configuration; is there at most one instance of each service?
"""

import os
import signal
import time

from . import procs
from .common import pause_services, session, wait_control_ready, wait_until
from .subjects import Svc

STOP_TIMEOUT = 3  # s, every supervisor's stop timeout (then SIGKILL, where it has one)


def daemon(ctx, cls):
    with session(ctx, cls, "probe-daemon", [Svc("d1", ["--service", "d1", "daemonize"])], STOP_TIMEOUT) as s:
        if not s.stop_cmd("d1"):
            ctx.probes[("daemon", s.name)] = (None, "no command to stop one service")
            return
        s.launch()
        two = wait_until(lambda: len(procs.live_instances(ctx.env.program)) >= 2 or None, 30)
        if not two:
            ctx.probes[("daemon", s.name)] = (None, "the daemonizing service did not come up")
            return
        main = set(ctx.events.live_pids())  # exec'd; the grandchild only forked
        wait_control_ready(ctx, s)
        grandchildren = [p for p in procs.live_instances(ctx.env.program) if p not in main]
        dt, cp = s.cmd(s.stop_cmd("d1"))
        gone = wait_until(lambda: not any(alive(p) for p in grandchildren) or None, STOP_TIMEOUT + 2)
        detail = f"stop returned {cp.returncode} after {dt:.1f} s; grandchild " + (
            "gone" if gone else f"still running {STOP_TIMEOUT + 2} s later")
        ctx.probes[("daemon", s.name)] = (bool(gone), detail)
        ctx.log(f"    {s.name}: daemonized grandchild: {detail}")


def alive(pid):
    st = procs.stat(pid)
    return st is not None and st[1] != "Z"


def kill9_and_restart(ctx, cls, n=3):
    with session(ctx, cls, "probe-kill9", pause_services(n), STOP_TIMEOUT) as s:
        s.launch()
        if ctx.events.wait_count(n, timeout=30) is None:
            ctx.probes[("kill9", s.name)] = (None, "services did not come up")
            return
        wait_control_ready(ctx, s)
        before = list(ctx.events.live_pids())
        os.kill(s.main_pid(), signal.SIGKILL)
        time.sleep(2.0)
        survivors = [p for p in before if alive(p)]
        ctx.probes[("kill9", s.name)] = (
            not survivors,
            f"{len(survivors)} of {n} services alive 2 s after SIGKILL of pid {s.main_pid()} ({s.argv()[0].split('/')[-1]})")
        procs.reap_orphans()
        # Same configuration, same state folder: a second instance must adopt
        # or clear what the first one left, never run a service twice.
        s.launch()
        time.sleep(1.0)
        wait_until(lambda: len(ctx.events.live_pids()) >= n or None, 10)
        wait_control_ready(ctx, s, timeout=10)
        time.sleep(2.0)
        per_service = {}
        for pid in procs.live_instances(ctx.env.program):
            args = procs.cmdline(pid)
            name = args[args.index("--service") + 1] if "--service" in args else "?"
            per_service[name] = per_service.get(name, 0) + 1
        dups = {k: v for k, v in per_service.items() if v > 1}
        missing = n - len(per_service)
        detail = (f"duplicates: {dups}" if dups else "one instance each") + (
            f"; {missing} service(s) not running" if missing > 0 else "")
        ctx.probes[("restart", s.name)] = (not dups, detail)
        ctx.log(f"    {s.name}: kill -9: {ctx.probes[('kill9', s.name)][1]}; restart: {detail}")
