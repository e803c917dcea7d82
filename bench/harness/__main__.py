"""Side-by-side benchmark of blackhole, peer supervisors and a raw baseline.

Run through bench/run, which builds and installs what this needs. Every
workload runs on every subject in the same run; subjects alternate within
each repetition so that drift of the machine hits all of them alike.
"""

import argparse
import hashlib
import json
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from . import probes, procs, report, subjects, w1_w2_startup, w3_restart, w4_logs, w5_w6_control
from .common import Ctx, env_dump

BENCH = Path(__file__).resolve().parent.parent
REPO = BENCH.parent
WORKLOADS = ["W1", "W2", "W3", "W4", "W5", "W6", "probes"]


def parse_args():
    ap = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small N and few trials: a smoke run of a few minutes")
    ap.add_argument("--only", default=",".join(WORKLOADS), help="comma-separated workloads (W1..W6, probes)")
    ap.add_argument("--peers", default=",".join(subjects.PEERS), help="comma-separated peers to compare")
    ap.add_argument("--runs", type=int, default=1, help="repetitions; figures are the median of runs")
    ap.add_argument("--sizes", default=None, help="service counts for W1/W2/W5/W6 (default 100,1000; quick: 20,100)")
    ap.add_argument("--no-wait", action="store_true",
                    help="do not wait for other load on the machine to calm down before each session")
    ap.add_argument("--keep", action="store_true", help="keep the work folders (configs, logs) for inspection")
    ap.add_argument("--explain", action="store_true",
                    help="follow blackhole's event stream during W3 and W5 and print when it saw each state "
                         "(a diagnostic that costs blackhole CPU: its figures are then not comparable)")
    ap.add_argument("--workdir", default=None, help="where sessions run (default: a fresh folder in /var/tmp)")
    return ap.parse_args()


def private_copy(src, dst):
    """The harness runs copies: a rebuild of target/release during the run cannot
    change what is measured, and exec events match our service binary only."""
    shutil.copy2(src, dst)
    return str(dst), hashlib.sha256(Path(src).read_bytes()).hexdigest()[:16]


def main():
    opts = parse_args()
    only = {w.strip() for w in opts.only.split(",") if w.strip()}
    bad = only - set(WORKLOADS)
    if bad:
        sys.exit(f"unknown workload(s): {', '.join(sorted(bad))}; known: {', '.join(WORKLOADS)}")
    peers = [p.strip() for p in opts.peers.split(",") if p.strip()]
    bad = set(peers) - set(subjects.PEERS)
    if bad:
        sys.exit(f"unknown peer(s): {', '.join(sorted(bad))}; known: {', '.join(subjects.PEERS)}")
    sizes = [int(x) for x in (opts.sizes or ("20,100" if opts.quick else "100,1000")).split(",")]

    procs.become_subreaper()
    # SIGTERM and SIGHUP unwind like Ctrl-C, so the finally below always cleans up.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.default_int_handler)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # 1000 services need many fds

    workroot = Path(opts.workdir or tempfile.mkdtemp(prefix="bhbench-", dir="/var/tmp"))
    workroot.mkdir(parents=True, exist_ok=True)
    tools = BENCH / ".tools"
    program, svc_hash = private_copy(REPO / "target/release/bh-testsvc", workroot / "bench-svc")
    blackhole, bh_hash = private_copy(REPO / "target/release/blackhole", workroot / "blackhole")
    env = subjects.Env(program=program, blackhole=blackhole, baseline=str(tools / "baseline"),
                       tools=tools, venv=BENCH / ".venv")

    chosen, skipped = [], {}
    for cls in subjects.ALL:
        if cls.name not in ("baseline", "blackhole") and cls.name not in peers:
            continue
        why = cls(env).unavailable()
        if why:
            skipped[cls.name] = why
            print(f"skipping {cls.name}: {why}", flush=True)
        else:
            chosen.append(cls)

    # W4 runs the stamped baseline beside the baseline.
    stamped = [subjects.StampedBaseline] if subjects.Baseline in chosen and "W4" in only else []
    ctx = Ctx(env=env, events=procs.ProcEvents(program), workroot=workroot, subjects=chosen, opts=opts,
              skipped=skipped)
    meta = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "bench/run " + " ".join(sys.argv[1:]),
        "machine": env_dump(),
        "versions": {c.name: c(env).version() for c in chosen + stamped},
        "binaries": {"blackhole_sha256_16": bh_hash, "bh-testsvc_sha256_16": svc_hash},
        "git": os.popen(f"git -C {REPO} describe --always --dirty 2>/dev/null").read().strip(),
        "sizes": sizes,
        "runs": opts.runs,
        "quick": opts.quick,
        "loadavg_start": loadavg(),
    }
    print(json.dumps(meta, indent=2), flush=True)
    t_start = time.monotonic()
    try:
        for r in range(opts.runs):
            ctx.log(f"== run {r + 1} of {opts.runs}")
            run_once(ctx, only, sizes)
        if "probes" in only:
            ctx.log("== correctness probes")
            for cls in chosen:
                if cls.is_baseline:
                    continue
                probes.daemon(ctx, cls)
                probes.kill9_and_restart(ctx, cls)
    except KeyboardInterrupt:
        print("\ninterrupted: cleaning up, then reporting what was measured", flush=True)
    finally:
        left = procs.sweep()
        if left:
            print(f"cleanup: killed {left} leftover process(es)", flush=True)
        from .common import remove_blackhole_cgroups

        remove_blackhole_cgroups("bhbench-")
        if not opts.keep:
            shutil.rmtree(workroot, ignore_errors=True)
    meta["elapsed_s"] = round(time.monotonic() - t_start)
    meta["loadavg_end"] = loadavg()
    save_and_print(ctx, meta)


def loadavg():
    return Path("/proc/loadavg").read_text().split()[:3]


def run_once(ctx, only, sizes):
    """Each workload on every subject in turn; the load average shows what else ran meanwhile."""
    subj = ctx.subjects
    if only & {"W1", "W2"}:
        ctx.log("-- W1 start-up / W2 idle  (load average " + " ".join(loadavg()) + ")")
        for n in sizes:
            for cls in subj:
                w1_w2_startup.run(ctx, cls, n, "W1" in only, "W2" in only)
    if "W3" in only:
        ctx.log("-- W3 restart latency  (load average " + " ".join(loadavg()) + ")")
        for cls in subj:
            w3_restart.run(ctx, cls)
    if "W4" in only:
        ctx.log("-- W4 log throughput  (load average " + " ".join(loadavg()) + ")")
        cases = [(1, 200_000), (20, 20_000)] if ctx.opts.quick else [(1, 1_000_000), (20, 1_000_000)]
        for writers, lines in cases:
            for cls in subj:
                w4_logs.run(ctx, cls, writers, lines)
                if cls is subjects.Baseline:
                    # What the prefix alone costs, beside the plain copy.
                    w4_logs.run(ctx, subjects.StampedBaseline, writers, lines)
    if only & {"W5", "W6"}:
        ctx.log("-- W6 control latency / W5 stop-all  (load average " + " ".join(loadavg()) + ")")
        for n in sizes:
            for cls in subj:
                w5_w6_control.control(ctx, cls, n, "W5" in only, "W6" in only)
    if "W5" in only:
        ctx.log("-- W5 shutdown  (load average " + " ".join(loadavg()) + ")")
        for cls in subj:
            w5_w6_control.shutdown(ctx, cls, sizes[0])
        for cls in subj:
            w5_w6_control.kill_at_timeout(ctx, cls)


def background_line(ctx):
    busy = sorted(b["busy"] for b in ctx.background)
    if not busy:
        return "Other load on the machine was not sampled (--no-wait)."
    return (f"Other load when each of the {len(busy)} sessions began (CPU busy, all cores): "
            f"median {busy[len(busy) // 2]:.0%}, max {busy[-1]:.0%}.")


def save_and_print(ctx, meta):
    out_dir = BENCH / "results"
    out_dir.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    raw = {
        "meta": meta,
        "metrics": {k: vars(m) for k, m in ctx.metrics.items()},
        "values": [{"metric": k, "subject": s, "runs": v} for (k, s), v in ctx.values.items()],
        "medians": {k: {c.name: ctx.median(k, c.name) for c in report.reported_subjects(ctx)} for k in ctx.metrics},
        "probes": [{"probe": p, "subject": s, "ok": ok, "detail": d} for (p, s), (ok, d) in ctx.probes.items()],
        "notes": [{"workload": w, "subject": s, "text": t} for w, s, t in ctx.notes],
        "skipped": ctx.skipped,
        "failed": [{"metric": k, "subject": s, "why": w} for (k, s), w in ctx.failed.items()],
        "background_busy": ctx.background,
        "setup": {c.name: {"restart_floor_s": c.restart_floor, "restart": c.restart_note,
                           "killed_after_s": c.restart_settle, "logs": c.log_note}
                  for c in report.reported_subjects(ctx)},
    }
    path = out_dir / f"{stamp}{'-quick' if meta['quick'] else ''}.json"
    path.write_text(json.dumps(raw, indent=1))
    md = [
        f"## Results ({meta['command']}, median of {meta['runs']} run(s), {meta['elapsed_s']} s)",
        "",
        "Lower is better everywhere. Peer cells show the peer's figure and, in parentheses, "
        "peer ÷ blackhole (above 1.00x: blackhole is faster or smaller).",
        "",
        background_line(ctx),
        "",
        report.results_table(ctx),
        "",
        "### Correctness probes",
        "",
        report.probes_table(ctx),
        "",
        "### Targets (blackhole)",
        "",
        report.targets_table(ctx),
        "",
        "### How each supervisor was set up",
        "",
        report.setup_table(ctx),
        "",
        "### Notes",
        "",
        report.notes_list(ctx),
        "",
        "### Versions",
        "",
        "\n".join(f"- {k}: {v}" for k, v in meta["versions"].items()),
    ]
    text = "\n".join(md) + "\n"
    path.with_suffix(".md").write_text(text)
    print("\n" + text)
    print(f"raw results: {path}")


if __name__ == "__main__":
    main()
