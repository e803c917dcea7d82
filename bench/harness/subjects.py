"""One adapter per supervisor under test, plus the raw baseline.

Every adapter turns the same list of services into its supervisor's own
configuration, configured for the fastest restart it allows, and runs the
supervisor in the foreground as a child of the harness (its own session, so
the harness can kill the whole group). Workloads only use this interface.
"""

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from . import procs


@dataclass
class Svc:
    name: str
    args: list  # arguments of the service program
    restart: bool = True  # restart whenever it exits, as fast as allowed
    log: bool = False  # W4: the output must end up in a log file we count
    # W3: configure the fastest restart even where that takes extra set-up
    # (s6 restarts at once only a service that reported readiness).
    fastest: bool = False


@dataclass
class Env:
    """Paths shared by every adapter."""

    program: str  # the service binary (a private copy of bh-testsvc)
    blackhole: str
    baseline: str
    tools: Path  # bench/.tools
    venv: Path  # bench/.venv


def run(argv, timeout=120, **kw):
    """Runs a control command; returns (seconds, CompletedProcess)."""
    t0 = procs.now_ns()
    cp = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, **kw)
    return (procs.now_ns() - t0) / 1e9, cp


def wait_for_files(paths, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(p.exists() for p in paths):
        time.sleep(0.01)


def write_exec(path, text):
    path.write_text(text)
    path.chmod(0o755)


class Subject:
    name = ""
    # Documented minimum delay between a service's death and its restart
    # (for a service that had been up long enough), and why.
    restart_floor = 0.0
    restart_note = ""
    # How long W3 lets a service run before killing it: past the peer's
    # "died too soon" rule, so the fastest legal restart is what is measured.
    restart_settle = 0.1
    is_baseline = False
    log_note = ""  # how W4's output reaches a file

    def __init__(self, env: Env):
        self.env = env
        self.proc = None
        self.dir = None
        self.services = []

    # -- what the harness asks of every adapter

    def unavailable(self):
        """None, or why this subject cannot run here."""
        return None

    def version(self):
        return "?"

    def setup(self, workdir: Path, services, stop_timeout=10):
        self.dir = workdir
        self.services = services
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "logs").mkdir(exist_ok=True)
        self.write_config(services, stop_timeout)

    def write_config(self, services, stop_timeout):
        raise NotImplementedError

    def argv(self):
        raise NotImplementedError

    def launch(self):
        self.proc = subprocess.Popen(
            self.argv(),
            cwd=self.dir,
            env=self.environ(),
            stdin=subprocess.DEVNULL,
            stdout=open(self.dir / "supervisor.out", "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=procs.die_with_parent,
        )
        return self.proc

    def environ(self):
        return dict(os.environ)

    def main_pid(self):
        return self.proc.pid

    def shutdown(self):
        """Ask the supervisor itself to stop everything and exit."""
        os.kill(self.main_pid(), signal.SIGTERM)

    def start_once(self, names):
        """Start services configured with restart=False and not started at launch (runit, s6)."""

    # Control commands: argv lists, or None when the supervisor has none.
    def status_cmd(self):
        return None

    def stop_all_cmd(self):
        return None

    def stop_cmd(self, name):
        return None

    def log_files(self, name):
        return sorted((self.dir / "logs").glob(f"{name}.log*"))

    def cmd(self, argv):
        return run(argv, cwd=self.dir, env=self.environ())


class Baseline(Subject):
    name = "baseline"
    restart_note = "restarts in the SIGCHLD handler loop, no delay"
    log_note = "one process copies each pipe to a file with read/write, no timestamps"
    is_baseline = True

    def version(self):
        return "bench/baseline.c (fork+exec, waitpid)"

    def write_config(self, services, stop_timeout):
        args = {tuple(s.args) for s in services}
        assert len(args) == 1, "the baseline runs N copies of one command"
        self.n = len(services)
        self.args = list(args.pop())
        self.logging = any(s.log for s in services)

    def argv(self):
        if self.logging:
            return [self.env.baseline, "log", str(self.dir / "logs"), str(self.n), self.env.program, *self.args]
        return [self.env.baseline, "spawn", str(self.n), self.env.program, *self.args]

    def log_files(self, name):
        index = [s.name for s in self.services].index(name)
        return [self.dir / "logs" / f"w{index:03d}.log"]  # the file baseline.c names it


class StampedBaseline(Baseline):
    """W4 only, as a reference: the baseline's copier adding blackhole's
    line prefix. Not a peer, not in the results table; the targets table
    sets blackhole against it."""

    name = "baseline-stamped"
    log_note = "the baseline's copier adding blackhole's prefix (time once per read, stream, pid) to each line"

    def version(self):
        return "bench/baseline.c logstamp"

    def argv(self):
        assert self.logging, "the stamped baseline only copies logs"
        return [self.env.baseline, "logstamp", str(self.dir / "logs"), str(self.n), self.env.program, *self.args]


class Blackhole(Subject):
    name = "blackhole"
    restart_note = "initial_delay = 0, jitter = 0: no delay"
    log_note = "its own log writer: a timestamp, stream and pid per line; log_max_size 4GiB (no rotation)"

    def version(self):
        _, cp = run([self.env.blackhole, "--version"])
        return cp.stdout.decode().strip()

    def conf(self):
        return self.dir / "blackhole.toml"

    def write_config(self, services, stop_timeout):
        lines = [
            "[orchestrator]",
            "log_service_output = false",
            f'shutdown_timeout = "{stop_timeout}s"',
            # W4 writes ~100 MiB per service: no rotation, so no line is rotated away.
            'log_max_size = "4GiB"',
        ]
        for s in services:
            lines += [
                f"[services.{s.name}]",
                f"binary_path = {json.dumps(self.env.program)}",
                f"args = {json.dumps(s.args)}",
                "service_args = false",
                f"[services.{s.name}.restart]",
            ]
            if s.restart:
                lines += ['policy = "always"', "initial_delay = 0", "jitter = 0.0", "max_attempts = 0"]
            else:
                lines += ['policy = "never"']
        self.conf().write_text("\n".join(lines) + "\n")

    def argv(self):
        return [self.env.blackhole, "up", "-c", str(self.conf())]

    def bh(self, *args):
        return [self.env.blackhole, "-c", str(self.conf()), *args]

    def status_cmd(self):
        return self.bh("status")

    def stop_all_cmd(self):
        return self.bh("stop", "--all")

    def stop_cmd(self, name):
        return self.bh("stop", name)

    def socket(self):
        return self.dir / ".blackhole" / "control.sock"

    def log_files(self, name):
        return sorted((self.dir / ".blackhole" / "logs").glob(f"{name}.log*"))


class Supervisord(Subject):
    name = "supervisord"
    restart_floor = 1.0
    restart_note = (
        "startsecs = 0 (no BACKOFF state, whose delays apply to deaths within startsecs), "
        "autorestart = true; the restart still waits for the main loop's 1 s poll timeout"
    )

    log_note = "supervisord reads the pipe, writes raw chunks, no timestamps (it has none); no rotation"

    def bin(self, tool):
        return str(self.env.venv / "bin" / tool)

    def unavailable(self):
        if not Path(self.bin("supervisord")).exists():
            return "supervisor is not installed in bench/.venv"
        return None

    def version(self):
        _, cp = run([self.bin("supervisord"), "--version"])
        return "supervisor " + cp.stdout.decode().strip()

    def conf(self):
        return self.dir / "supervisord.conf"

    def write_config(self, services, stop_timeout):
        d = self.dir
        text = f"""[unix_http_server]
file={d}/supervisor.sock
[supervisord]
nodaemon=true
logfile={d}/supervisord.log
pidfile={d}/supervisord.pid
childlogdir={d}/logs
minfds=16000
minprocs=2000
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[supervisorctl]
serverurl=unix://{d}/supervisor.sock
"""
        for s in services:
            text += f"""[program:{s.name}]
command={self.env.program} {' '.join(s.args)}
autostart=true
autorestart={'true' if s.restart else 'false'}
startsecs=0
startretries=1000000
stopwaitsecs={stop_timeout}
redirect_stderr=true
stdout_logfile={d}/logs/{s.name}.log
stdout_logfile_maxbytes=0
"""
        self.conf().write_text(text)

    def argv(self):
        return [self.bin("supervisord"), "-n", "-c", str(self.conf())]

    def ctl(self, *args):
        return [self.bin("supervisorctl"), "-c", str(self.conf()), *args]

    def status_cmd(self):
        return self.ctl("status")

    def stop_all_cmd(self):
        return self.ctl("stop", "all")

    def stop_cmd(self, name):
        return self.ctl("stop", name)


class Runit(Subject):
    name = "runit"
    restart_floor = 1.0
    restart_settle = 1.1
    restart_note = "runsv waits 1 s before restarting a service that ran less than 1 s; otherwise at once"
    log_note = "a log/ service per writer: svlogd -tt (UTC timestamp per line), no rotation (s0)"

    def unavailable(self):
        return None if shutil.which("runsvdir") else "runit is not installed (apt-get install runit)"

    def version(self):
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "runit"], capture_output=True)
        return "runit " + out.stdout.decode()

    def svdir(self):
        return self.dir / "service"

    def write_config(self, services, stop_timeout):
        for s in services:
            sd = self.svdir() / s.name
            sd.mkdir(parents=True)
            # /bin/sh is runit's usual run-script interpreter; it execs the program.
            write_exec(sd / "run", f"#!/bin/sh\nexec 2>&1\nexec {self.env.program} {' '.join(s.args)}\n")
            if not s.restart:
                (sd / "down").touch()  # started once by start_once(), never restarted
            if s.log:
                logdir = self.dir / "logs" / s.name
                logdir.mkdir(parents=True)
                (logdir / "config").write_text("s0\nn0\n")  # no rotation, keep everything
                (sd / "log").mkdir()
                write_exec(sd / "log" / "run", f"#!/bin/sh\nexec svlogd -tt {logdir}\n")

    def argv(self):
        return ["runsvdir", "-P", str(self.svdir())]

    def dirs(self):
        return [str(self.svdir() / s.name) for s in self.services]

    def shutdown(self):
        # runsvdir(8): on SIGHUP it sends TERM to every runsv, which stops its
        # service and exits, then runsvdir exits.
        os.kill(self.main_pid(), signal.SIGHUP)

    def start_once(self, names):
        dirs = [self.svdir() / n for n in names]
        wait_for_files([d / "supervise" / "ok" for d in dirs])  # runsv is up
        self.cmd(["sv", "once", *map(str, dirs)])

    def status_cmd(self):
        return ["sv", "status", *self.dirs()]

    def stop_all_cmd(self):
        return ["sv", "down", *self.dirs()]

    def stop_cmd(self, name):
        return ["sv", "-w", "30", "-v", "down", str(self.svdir() / name)]

    def log_files(self, name):
        d = self.dir / "logs" / name
        return sorted(p for p in d.glob("*") if p.name in ("current",) or p.name.startswith("@"))


class S6(Subject):
    name = "s6"
    restart_floor = 1.0
    restart_settle = 1.1
    restart_note = (
        "s6-supervise keeps 1 s between two spawns of ./run unless the service had been ready for over "
        "1 s; W3 uses notification-fd 3 and a run script that reports ready just before the exec"
    )

    log_note = "a log/ service per writer: s6-log T (ISO 8601 timestamp per line), 200 MB files"

    def unavailable(self):
        return None if shutil.which("s6-svscan") else "s6 is not installed (apt-get install s6)"

    def version(self):
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "s6"], capture_output=True)
        return "s6 " + out.stdout.decode()

    def scandir(self):
        return self.dir / "scan"

    def write_config(self, services, stop_timeout):
        execline = shutil.which("execlineb")
        for s in services:
            sd = self.scandir() / s.name
            sd.mkdir(parents=True)
            # execline is s6's own run-script language: no shell, one exec chain.
            ready = ""
            if s.fastest:
                # Without readiness, s6-supervise always waits 1 s before a
                # respawn; with it, a service ready for over 1 s restarts at once.
                # The run script reports ready on fd 3 just before the exec.
                (sd / "notification-fd").write_text("3\n")
                ready = "foreground { fdmove 1 3 echo }\nfdclose 3\n"
            if execline:
                run_script = f"#!{execline} -P\nfdmove -c 2 1\n{ready}{self.env.program} {' '.join(s.args)}\n"
            else:
                assert not s.fastest, "the readiness line needs execline"
                run_script = f"#!/bin/sh\nexec 2>&1\nexec {self.env.program} {' '.join(s.args)}\n"
            write_exec(sd / "run", run_script)
            (sd / "timeout-kill").write_text(f"{stop_timeout * 1000}\n")
            if not s.restart:
                (sd / "down").touch()
            if s.log:
                logdir = self.dir / "logs" / s.name
                logdir.mkdir(parents=True)
                (sd / "log").mkdir()
                # T: ISO 8601 timestamps; s: 200 MB files (the cap is 256 MiB), so W4 rarely rotates.
                write_exec(sd / "log" / "run", f"#!/bin/sh\nexec s6-log -b n100 s200000000 T {logdir}\n")

    def argv(self):
        # -c: s6-svscan supervises at most 500 service directories by default.
        return ["s6-svscan", "-c", str(max(500, 2 * len(self.services) + 10)), str(self.scandir())]

    def dirs(self):
        return [str(self.scandir() / s.name) for s in self.services]

    def shutdown(self):
        # s6-svscanctl -t: s6-svscan tells every s6-supervise to stop its
        # service and exit, then exits.
        self.cmd(["s6-svscanctl", "-t", str(self.scandir())])

    def start_once(self, names):
        dirs = [self.scandir() / n for n in names]
        wait_for_files([d / "supervise" / "control" for d in dirs])  # s6-supervise is up
        for d in dirs:
            self.cmd(["s6-svc", "-o", str(d)])

    def _each(self, tool_args):
        # s6-svc and s6-svstat take one service directory per call.
        script = 'for d in "$@"; do ' + tool_args + ' "$d" || exit 1; done'
        return ["/bin/sh", "-c", script, "sh", *self.dirs()]

    def status_cmd(self):
        return self._each("s6-svstat")

    def stop_all_cmd(self):
        return self._each("s6-svc -d")

    def stop_cmd(self, name):
        return ["s6-svc", "-wD", "-T", "30000", "-d", str(self.scandir() / name)]

    def log_files(self, name):
        d = self.dir / "logs" / name
        return sorted(p for p in d.glob("*") if p.name == "current" or p.name.startswith("@"))


class PM2(Subject):
    name = "pm2"
    restart_note = "restart_delay = 0 and no exp_backoff_restart_delay: restarts on the exit event"
    log_note = "out_file/error_file, no timestamps (time: true cut lines apart in a trial)"

    def bin(self, tool):
        return str(self.env.tools / "node" / "node_modules" / ".bin" / tool)

    def unavailable(self):
        if not Path(self.bin("pm2-runtime")).exists():
            return "pm2 is not installed in bench/.tools/node (npm install pm2)"
        return None

    def version(self):
        pkg = self.env.tools / "node" / "node_modules" / "pm2" / "package.json"
        return "pm2 " + json.loads(pkg.read_text())["version"]

    def environ(self):
        env = dict(os.environ)
        env["PM2_HOME"] = str(self.dir / "pm2home")  # never the user's ~/.pm2
        return env

    def write_config(self, services, stop_timeout):
        apps = []
        for s in services:
            log = str(self.dir / "logs" / f"{s.name}.log")
            apps.append(
                {
                    "name": s.name,
                    "script": self.env.program,
                    "args": s.args,
                    "interpreter": "none",
                    "autorestart": s.restart,
                    "restart_delay": 0,
                    "max_restarts": 1000000,
                    "min_uptime": 0,
                    "kill_timeout": stop_timeout * 1000,
                    "out_file": log,
                    "error_file": log,
                    # "time": true would prefix a timestamp per chunk, not per line:
                    # in a trial it cut ~0.15 % of the lines apart (their start lost).
                    "time": False,
                }
            )
        (self.dir / "ecosystem.json").write_text(json.dumps({"apps": apps}))

    def argv(self):
        # pm2-runtime: PM2's foreground mode (for containers); its daemon runs inside it.
        return [self.bin("pm2-runtime"), "start", str(self.dir / "ecosystem.json")]

    def status_cmd(self):
        return [self.bin("pm2"), "jlist"]

    def stop_all_cmd(self):
        return [self.bin("pm2"), "stop", "all"]

    def stop_cmd(self, name):
        return [self.bin("pm2"), "stop", name]


class Horust(Subject):
    name = "horust"
    restart_note = "[restart] backoff = \"0s\""
    log_note = "stdout = a file: horust hands the file to the service, which writes it directly (no pipe)"

    def bin(self):
        return str(self.env.tools / "cargo" / "bin" / "horust")

    def unavailable(self):
        return None if Path(self.bin()).exists() else "horust is not installed (cargo install horust)"

    def version(self):
        _, cp = run(["cargo", "install", "--list", "--root", str(self.env.tools / "cargo")])
        return cp.stdout.decode().splitlines()[0].rstrip(":")

    def write_config(self, services, stop_timeout):
        sdir = self.dir / "services"
        sdir.mkdir()
        for s in services:
            log = self.dir / "logs" / f"{s.name}.log"
            (sdir / f"{s.name}.toml").write_text(
                f'command = "{self.env.program} {" ".join(s.args)}"\n'
                f'stdout = "{log}"\nstderr = "{log}"\n'
                # Rotation splits the file; log_files() counts every piece.
                '[restart]\n'
                f'strategy = "{"always" if s.restart else "never"}"\n'
                'backoff = "0s"\nattempts = 0\n'
                f'[termination]\nwait = "{stop_timeout}s"\n'
                '[failure]\nstrategy = "ignore"\n'
            )

    def argv(self):
        return [self.bin(), "--services-path", str(self.dir / "services"), "--uds-folder-path", str(self.dir)]


ALL = [Baseline, Blackhole, Supervisord, Runit, S6, PM2, Horust]
PEERS = [c.name for c in ALL if c not in (Baseline, Blackhole)]
