"""Markdown tables: figures side by side, the correctness probes, and the
targets blackhole is judged against."""

from .subjects import StampedBaseline


def fmt(ctx, key, value, subject=None):
    if value is None:
        return "failed" if (key, subject) in ctx.failed else "-"
    return ctx.metrics[key].fmt.format(value)


def ratio(a, b):
    if a is None or b is None:
        return None
    if b == 0:
        return None if a else 1.0
    return a / b


def rfmt(r):
    return "-" if r is None else f"{r:.2f}x"


def results_table(ctx):
    peers = [c.name for c in ctx.subjects if c.name not in ("baseline", "blackhole")]
    head = ["metric", "baseline", "blackhole", "blackhole / baseline"] + [
        f"{p} (÷ blackhole)" for p in peers]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, m in ctx.metrics.items():
        base = ctx.median(key, "baseline")
        bh = ctx.median(key, "blackhole")
        label = f"{m.label} ({m.unit})" if m.unit else m.label
        cells = [label, fmt(ctx, key, base, "baseline"), fmt(ctx, key, bh, "blackhole"),
                 rfmt(ratio(bh, base)) if m.ratios else ""]
        for p in peers:
            v = ctx.median(key, p)
            cell = fmt(ctx, key, v, p)
            if v is not None and m.ratios and ratio(v, bh) is not None:
                cell += f" ({rfmt(ratio(v, bh))})"
            cells.append(cell)
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


PROBES = [
    ("daemon", "daemonized grandchild gone after stopping the service"),
    ("kill9", "no service survives a SIGKILL of the supervisor (checked after 2 s)"),
    ("restart", "no duplicate instance after SIGKILL and a new start"),
]


def probes_table(ctx):
    subjects = [c.name for c in ctx.subjects if not c.is_baseline]
    rows = ["| probe | " + " | ".join(subjects) + " |", "|" + "---|" * (len(subjects) + 1)]
    for key, label in PROBES:
        cells = []
        for s in subjects:
            ok, detail = ctx.probes.get((key, s), (None, "not run"))
            mark = {True: "yes", False: "**no**", None: "n/a"}[ok]
            cells.append(f"{mark} ({detail})")
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def targets(ctx):
    """(target, figure, met) for each target; met is None when it was not
    measured, and "info" for a figure shown beside the targets, not judged."""
    med = ctx.median
    out = []

    def vs_base(key, limit, what):
        bh, base = med(key, "blackhole"), med(key, "baseline")
        r = ratio(bh, base)
        if (key, "blackhole") in ctx.failed:
            out.append((f"{what} within {limit}x the baseline", f"failed: {ctx.failed[(key, 'blackhole')]}", False))
            return
        fig = "not measured" if r is None else f"{fmt(ctx, key, bh)} vs {fmt(ctx, key, base)} ms = {r:.2f}x"
        out.append((f"{what} within {limit}x the baseline", fig, None if r is None else r <= limit))

    def below(key, limit, unit, what):
        v = med(key, "blackhole")
        fig = "not measured" if v is None else f"{fmt(ctx, key, v)} {unit}".strip()
        out.append((f"{what} < {limit} {unit}".strip(), fig, None if v is None else v < limit))

    for n in (100, 1000):
        if f"W1.start.{n}" in ctx.metrics:
            vs_base(f"W1.start.{n}", 2, f"W1 start-up, {n} services,")
    for n, limit in ((100, 8), (1000, 20)):
        if f"W1.rss.{n}" in ctx.metrics:
            below(f"W1.rss.{n}", limit, "MiB", f"W1 RSS with {n} services")
    for n in (100, 1000):
        if f"W2.wake.{n}" in ctx.metrics:
            v = med(f"W2.wake.{n}", "blackhole")
            out.append((f"W2 no wake-ups while idle, {n} services", "not measured" if v is None else f"{v:.0f}",
                        None if v is None else v == 0))
            below(f"W2.cpu.{n}", 1, "ms", f"W2 idle CPU over the window, {n} services,")
    if "W3.p50" in ctx.metrics:
        vs_base("W3.p50", 2, "W3 restart p50")
        below("W3.p50", 4, "ms", "W3 restart p50")
        below("W3.p99", 10, "ms", "W3 restart p99")
    # W4: one writer within 1.2x the baseline, the writer itself slowed no
    # more than that; many writers "scale with no loss": at least the lines
    # per second of one writer, and none lost.
    w4 = {}
    for key in ctx.metrics:
        if key.startswith("W4.total."):
            writers, klines = key.split(".")[2].rstrip("k").split("x")
            w4[key] = (int(writers), int(klines) * 1000)
    single = [k for k, (w, _) in w4.items() if w == 1]
    for key, (writers, lines) in w4.items():
        m = ctx.metrics[key]
        label = m.label.split(":")[0]
        if writers == 1:
            vs_base(key, 1.2, m.label.replace(": until all lines are in the log", ", all lines in the log,"))
            vs_base(key.replace("total", "writer"), 1.2, f"{label}, the writer's own runtime,")
        elif single:
            n_ms, one_ms = med(key, "blackhole"), med(single[0], "blackhole")
            if n_ms and one_ms:
                rate_n = writers * lines / n_ms / 1000
                rate_1 = w4[single[0]][1] / one_ms / 1000
                out.append((f"{label}: scales (at least one writer's lines per second)",
                            f"{rate_n:.1f} vs {rate_1:.1f} million lines/s", rate_n >= rate_1))
            else:
                out.append((f"{label}: scales (at least one writer's lines per second)", "not measured", None))
        # Not targets: where the figure stands against the plain copy (for
        # many writers) and against the copy that adds the same prefix.
        bh = med(key, "blackhole")
        for subject, what in (("baseline", "the baseline"), ("baseline-stamped", "the baseline adding the same prefix")):
            ref = med(key, subject)
            if bh and ref and (writers > 1 or subject != "baseline"):
                out.append((f"({label} against {what}, not a target)", f"{bh:.0f} vs {ref:.0f} ms = {bh / ref:.2f}x",
                            "info"))
        lost = med(key.replace("total", "lost"), "blackhole")
        out.append((f"{label}: zero lines lost", "not measured" if lost is None else f"{lost:.0f} lost",
                    None if lost is None else lost == 0))
    # The W5 target is for 100 services (stop-all and shutdown);
    # 1000 is measured and shown, not judged.
    for key, m in ctx.metrics.items():
        if key in ("W5.stop.100", "W5.shutdown.100"):
            vs_base(key, 2, m.label)
    if "W5.killmax" in ctx.metrics:
        v = med("W5.killmax", "blackhole")
        fig = "not measured" if v is None else f"worst {v:+.1f} ms, median {med('W5.kill50', 'blackhole'):+.1f} ms"
        out.append(("W5 a service ignoring SIGTERM is SIGKILLed at its stop timeout ±20 ms", fig,
                    None if v is None else abs(v) <= 20))
    return out


def targets_table(ctx):
    rows = ["| target | blackhole's figure | |", "|---|---|---|"]
    for what, fig, met in targets(ctx):
        verdict = {True: "met", False: "**missed**", None: "n/a", "info": ""}[met]
        rows.append(f"| {what} | {fig} | {verdict} |")
    return "\n".join(rows)


def notes_list(ctx):
    lines = [f"- {w} {s}: {t}" for w, s, t in ctx.notes]
    for s, why in ctx.skipped.items():
        lines.append(f"- {s} skipped: {why}")
    return "\n".join(lines) or "- none"


def reported_subjects(ctx):
    """The subjects, and the stamped baseline when W4 ran it."""
    ran = any(s == StampedBaseline.name for _, s in ctx.values)
    return list(ctx.subjects) + ([StampedBaseline] if ran else [])


def setup_table(ctx):
    rows = ["| supervisor | minimum restart delay it enforces | restart configuration | W3 kills after | "
            "W4 log path |", "|---|---|---|---|---|"]
    for c in reported_subjects(ctx):
        if c is StampedBaseline:
            rows.append(f"| {c.name} | - | W4 only | - | {c.log_note} |")
            continue
        rows.append(f"| {c.name} | {c.restart_floor:g} s | {c.restart_note} | {c.restart_settle:g} s up | "
                    f"{c.log_note} |")
    return "\n".join(rows)
