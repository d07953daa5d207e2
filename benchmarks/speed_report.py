"""SPEED.md from benchmarks/speed.py's measurements: the speed targets, then one table per side.

Every number here is read from the run's JSON; ratios are quotients of medians taken in the same cell
(interleaved). A target is "met" only when every cell it covers meets it; the targets cover VGG-16 and
ResNet-50 at batch 1 and 16; the digits CNN is shown for information. The ratio targets are issue 21's
(issue 8 §3's, tightened for the two composites); issue 21's other models, batch 8 and its memory target
(the graph's floor) are scored in SPEED_FLOOR.md (benchmarks/speed_floor.py), with each cell's floor.
"""

from __future__ import annotations

import math

NAMES = {"vgg16": "VGG-16", "resnet50": "ResNet-50", "digits_cnn": "digits CNN"}  # the tables' order
METHOD_NAMES = {
    "epsilon": "epsilon (ε=1e-6)",
    "EpsilonPlusFlat": "EpsilonPlusFlat",
    "EpsilonGammaBox": "EpsilonGammaBox (0, 1)",
}
RATIO_TARGETS = {"epsilon": 2.2, "EpsilonPlusFlat": 3.0, "EpsilonGammaBox": 3.3}  # explained ÷ forward ≤
ZENNIT_TARGETS = {"EpsilonPlusFlat": 2.0, "EpsilonGammaBox": 3.0}  # Zennit ÷ lrpc ≥
INNV_TARGETS = {"lrp.epsilon": 1.4}  # iNNvestigate ÷ lrpc ≥
COMPILE_TARGET, RSS_TARGET = 5.0, 1.5  # RSS: issue 8's, explained ÷ forward
SCORED = ("vgg16", "resnet50")


def ms(t: dict) -> str:
    return (
        f"{t['median_ms']:.1f} ±{t['spread']:.0%}"
        if t["median_ms"] >= 1
        else f"{t['median_ms']:.3f} ±{t['spread']:.0%}"
    )


def met(ok) -> str:
    return "—" if ok is None else ("met" if ok else "**not met**")


def table(head: list, rows: list) -> list:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + [
        "| " + " | ".join(str(c) for c in row) + " |" for row in rows
    ]


def cell_name(row) -> str:
    return f"{NAMES[row['model']]} b{row['batch']}"


def ordered(rows: list) -> list:
    """Rows by model (NAMES' order), then method or analyzer, then batch."""
    methods = [*METHOD_NAMES, "lrp.epsilon", "lrp.alpha_1_beta_0"]
    return sorted(
        rows,
        key=lambda r: (
            list(NAMES).index(r["model"]),
            methods.index(r.get("method", r.get("analyzer"))),
            r.get("batch", 0),
        ),
    )


# ------------------------------------------------------------------------------------------ per side


def lrpc_rows(result):
    """(model, batch, method, forward, explained, ratio, target, met) from lrpc.bench."""
    rows = []
    for r in ordered(result["lrpc"]):
        b = r["bench"]["batches"][0]
        limit = RATIO_TARGETS[r["method"]]
        ok = b["ratio"] <= limit if r["model"] in SCORED else None
        rows.append(
            [
                NAMES[r["model"]],
                r["batch"],
                METHOD_NAMES[r["method"]],
                ms(b["forward"]),
                ms(b["explained"]),
                f"{b['ratio']:.2f}×",
                f"≤ {limit}×",
                met(ok),
            ]
        )
    return rows


def cost_rows(result):
    """Compile (each bench call), session creation and peak RSS per model and method."""
    rows = []
    for model in [m for m in NAMES if m in result["models"]]:
        for method in METHOD_NAMES:
            calls = [r for r in ordered(result["lrpc"]) if r["model"] == model and r["method"] == method]
            if not calls:
                continue
            compile_s = max(c["bench"]["compile_s"] for c in calls)
            sessions = calls[-1]["bench"]["session_s"]
            compile_ok = compile_s <= COMPILE_TARGET if model == "vgg16" else None
            mem = next((r for r in result.get("memory", []) if r["model"] == model and r["method"] == method), None)
            ratio = mem["explained_mb"] / mem["forward_mb"] if mem else None
            rss_ok = None if ratio is None or model not in SCORED else ratio <= RSS_TARGET
            compiles = " / ".join(f"{c['bench']['compile_s']:.2f}" for c in calls)
            rows.append(
                [
                    NAMES[model],
                    METHOD_NAMES[method],
                    compiles,
                    met(compile_ok),
                    f"{sessions['forward']:.2f} / {sessions['explained']:.2f}",
                    f"{mem['forward_mb']:.0f} / {mem['explained_mb']:.0f} (b{mem['batch']})" if mem else "—",
                    f"{ratio:.2f}×" if mem else "—",
                    met(rss_ok),
                ]
            )
    return rows


def zennit_rows(result):
    rows = []
    for r in ordered(result["zennit"]):
        t = r["timings"]
        z, lrpc, tf, of = (t[k]["median_ms"] for k in ("zennit", "lrpc", "torch_forward", "ort_forward"))
        limit = ZENNIT_TARGETS.get(r["method"])
        ok = z / lrpc >= limit if limit and r["model"] in SCORED else None
        rows.append(
            [
                NAMES[r["model"]],
                r["batch"],
                METHOD_NAMES[r["method"]],
                ms(t["torch_forward"]),
                ms(t["zennit"]),
                f"{z / tf:.2f}×",
                ms(t["ort_forward"]),
                ms(t["lrpc"]),
                f"{lrpc / of:.2f}×",
                f"{lrpc / z:.2f}",
                f"{z / lrpc:.2f}×",
                f"≥ {limit}×" if limit else "—",
                met(ok),
            ]
        )
    return rows


def innvestigate_rows(result):
    rows = []
    for r in ordered(result["innvestigate"]):
        t = r["timings"]
        i, lrpc, of = (t[k]["median_ms"] for k in ("innvestigate", "lrpc", "ort_forward"))
        limit = INNV_TARGETS.get(r["analyzer"])
        ok = i / lrpc >= limit if limit and r["model"] in SCORED else None
        first = f"{r['first']['first_call_s']:.1f} s (b{r['batch']})" if r["first"] else ""
        rows.append(
            [
                NAMES[r["model"]],
                r["batch"],
                r["analyzer"],
                ms(t["ort_forward"]),
                ms(t["innvestigate"]),
                f"{i / of:.2f}×",
                first,
                ms(t["lrpc"]),
                f"{lrpc / of:.2f}×",
                f"{lrpc / i:.2f}",
                f"{i / lrpc:.2f}×",
                f"≥ {limit}×" if limit else "—",
                met(ok),
            ]
        )
    return rows


# ------------------------------------------------------------------------------------------ targets


def _verdict(cells: list, ok, worst) -> tuple[str, str]:
    """(measured text, met) over cells [(name, value, text)]: the worst cell, then all of them."""
    if not cells:
        return "not measured in this run", "—"
    w = worst(cells, key=lambda c: c[1])
    return (f"worst {w[2]} ({w[0]}); " + ", ".join(f"{c[0]} {c[2]}" for c in cells), met(all(ok(c[1]) for c in cells)))


def targets(result) -> list:
    rows = []
    scored = lambda rs: [r for r in ordered(rs) if r["model"] in SCORED]  # noqa: E731
    for method, limit in RATIO_TARGETS.items():
        cells = [
            (f"{cell_name(r)}", r["bench"]["batches"][0]["ratio"], f"{r['bench']['batches'][0]['ratio']:.2f}×")
            for r in scored(result["lrpc"])
            if r["method"] == method
        ]
        rows.append(
            [f"{METHOD_NAMES[method]}: explained ÷ forward ≤ {limit}×", *_verdict(cells, lambda v: v <= limit, max)]
        )
    for method, limit in ZENNIT_TARGETS.items():
        cells = [
            (cell_name(r), s, f"{s:.2f}×")
            for r in scored(result["zennit"])
            if r["method"] == method
            for s in [r["timings"]["zennit"]["median_ms"] / r["timings"]["lrpc"]["median_ms"]]
        ]
        rows.append([f"≥ {limit}× faster than Zennit {method}", *_verdict(cells, lambda v: v >= limit, min)])
    for analyzer, limit in INNV_TARGETS.items():
        cells = [
            (cell_name(r), s, f"{s:.2f}×")
            for r in scored(result["innvestigate"])
            if r["analyzer"] == analyzer
            for s in [r["timings"]["innvestigate"]["median_ms"] / r["timings"]["lrpc"]["median_ms"]]
        ]
        rows.append([f"≥ {limit}× faster than iNNvestigate {analyzer}", *_verdict(cells, lambda v: v >= limit, min)])
    cells = [
        (f"{METHOD_NAMES[r['method']]} b{r['batch']}", r["bench"]["compile_s"], f"{r['bench']['compile_s']:.1f} s")
        for r in ordered(result["lrpc"])
        if r["model"] == "vgg16"
    ]
    rows.append([f"compile VGG-16 ≤ {COMPILE_TARGET:g} s", *_verdict(cells, lambda v: v <= COMPILE_TARGET, max)])
    cells = [
        (f"{NAMES[r['model']]} {r['method']} b{r['batch']}", q, f"{q:.2f}×")
        for r in scored(result.get("memory", []))
        for q in [r["explained_mb"] / r["forward_mb"]]
    ]
    rss = f"peak RSS explained ÷ forward ≤ {RSS_TARGET}× (issue 8)"
    rows.append([rss, *_verdict(cells, lambda v: v <= RSS_TARGET, max)])
    return rows


# ------------------------------------------------------------------------------------------ the page


def header(result) -> list:
    m, load = result["machine"], result
    v = m["versions"]
    cells = [r["load"] for side in ("lrpc", "zennit", "innvestigate") for r in result[side]]
    keras = next(
        (info for info in (x.get("keras") for x in result["models"].values()) if info and "versions" in info), None
    )
    lines = [
        "# Speed: lrpc beside Zennit and iNNvestigate",
        "",
        "Generated by benchmarks/speed.py (issue 8, item 2); regenerate with",
        "",
        f"    {result['command']}",
        "",
        f"Run {result['started']}{_resumed(result)}, wall time {result['wall_s'] / 60:.1f} min. "
        f"Machine: {m['cpu']}, "
        f"{m['cpus']} logical CPUs, {m['memory_gb']} GB RAM; **{m['threads']} threads everywhere** "
        "(torch.set_num_threads, onnxruntime intra_op_num_threads, TF intra/inter-op pools).",
        "",
        "**The machine is shared with other work and noisy**: load average (1, 5, 15 min) "
        f"{_load(load['load_start'])} at the start, {_load(load['load_end'])} at the end; the 1-minute load after "
        f"each cell ranged {min(cells, default=math.nan):.1f}–{max(cells, default=math.nan):.1f}. Ratios taken "
        "inside one interleaved cell hold up under such load far better than the absolute times, which "
        "carry it in full.",
        "",
        f"Versions: lrpc {v['lrpc']} (commit {m['commit']}{_dirty(m['uncommitted'])}), Python {v['python']}, "
        f"onnxruntime {v['onnxruntime']}, onnx {v['onnx']}, torch {v['torch']}, zennit {v['zennit']}, "
        f"numpy {v['numpy']}",
    ]
    if keras:
        kv = keras["versions"]
        lines[-1] += (
            f"; iNNvestigate {kv['innvestigate']}, tensorflow {kv['tensorflow']}, keras {kv['keras']}, "
            f"numpy {kv['numpy']} ({keras['onednn']})"
        )
    s = result["settings"]
    lines += [
        "",
        f"Rounds: {s['warmup']} warm-up round(s) per cell, not counted; then {s['repeats']} timed rounds "
        f"for VGG-16/ResNet-50 at batch 1, {s['repeats_large']} at batch 16, {s['repeats_small']} for the "
        "digits CNN. Times are medians ± spread, spread = (p90 − p10) / median. In the Zennit and "
        "iNNvestigate cells, where two runtimes alternate on the same cores, idle threads sleep instead "
        f"of spinning (OMP_WAIT_POLICY={s.get('omp_wait_policy')} for torch, onnxruntime "
        "`session.intra_op.allow_spinning` 0): with spinning on, one runtime's idle threads took the cores "
        "from the other and single cells swung by 100× (benchmarks/speed_refs.py). There, too, lrpc's graph "
        "on VGG-16 and ResNet-50 gets a fresh session each round — created and run twice untimed, then the "
        "timed (warm) run, then dropped — so that its arena (6–10 GB at VGG-16 batch 16) is empty while the "
        "reference runs. "
        "`lrpc.bench`'s cells run onnxruntime alone, the plain and the explained session taking turns with "
        "idle threads sleeping (before 2026-12-02 they spun, which flattered small models' ratios: "
        "PROFILE.md §10).",
    ]
    lines += [
        f"Waited {w['s'] / 60:.1f} min before {NAMES[w['model']]} for memory (other work held it; "
        f"{w['available_gb']:.1f} GB available when it started)."
        for w in result.get("waited", [])
    ]
    return lines + [f"Skipped: {x}" for x in result["skipped"]]


def _resumed(result) -> str:
    """The --resume invocations that completed a stopped run."""
    runs = result.get("resumed", [])
    if not runs:
        return ""

    def one(r):
        redo = f"; commit {r['commit']}, {' and '.join(r['redo'])} cells measured again" if r.get("redo") else ""
        return f"{r['at']} (load {r['load'][0]:.2f}{redo})"

    return (
        ", then resumed "
        + ", ".join(one(r) for r in runs)
        + " with `--resume`, which measured only the cells it lacked (wall time: the invocations' time "
        "up to their last saved cell)"
    )


def _dirty(paths) -> str:
    return f", uncommitted changes in {', '.join(p.split()[-1] for p in paths)}" if paths else ""


def _load(values) -> str:
    return ", ".join(f"{x:.2f}" for x in values)


def markdown(result) -> str:
    lines = header(result)
    lines += [
        "",
        "## Targets (issue 21; issue 8 §3)",
        "",
        "Scored on VGG-16 and ResNet-50 at batch 1 and 16; a target is met when every such cell meets it.",
        "",
    ]
    lines += table(["target", "measured", ""], targets(result))
    lines += [
        "",
        "Where a ratio target is not met, `benchmarks/SPEED_FLOOR.md` gives each cell of it (the same seeded "
        "VGG-16 and ResNet-50, and issue 21's other models and batch 8) beside its floors — the products' "
        "part of the time, the plain gradient's ratio, LRP-0's gradient form's, the gradient's with the "
        "rule's own products — and names the floor it sits on. `benchmarks/PROFILE.md` shows where the time "
        "and memory go: §7 what an explained session must hold and what onnxruntime adds, §8 why the ratio "
        "grows with the batch, §12–§14 the floors and the iNNvestigate cell, with the levers measured and "
        "rejected.",
    ]
    lines += [
        "",
        "## lrpc: explained ÷ plain forward (onnxruntime CPU, `lrpc.bench`)",
        "",
        "Plain model and explained graph in one process under the same session options, interleaved. "
        "Inputs U[0, 1); each sample's largest logit explained.",
        "",
    ]
    lines += table(["model", "batch", "method", "forward ms", "explained ms", "ratio", "target", ""], lrpc_rows(result))
    lines += [
        "",
        "Compile time (one per bench call: batch 1, then the larger batch), session creation (the "
        "larger batch's call) and peak RSS: `lrpc.bench.peak_rss_mb` — each session alone in a fresh "
        "process, created and run 3 times at the larger batch, its growth over the process before the "
        "session — launched from a small Python process (the measuring child's ru_maxrss starts at its "
        "parent's peak, so it is not launched from this benchmark's own, large process):",
        "",
    ]
    lines += table(
        [
            "model",
            "method",
            "compile s",
            "≤ 5 s (VGG-16)",
            "session s fwd / expl",
            "peak RSS MB fwd / expl",
            "RSS ratio",
            "≤ 1.5×",
        ],
        cost_rows(result),
    )
    if result["zennit"]:
        lines += ["", "## Zennit 0.5.1 (torch CPU), same weights", "", ZENNIT_NOTE, ""]
        lines += table(
            [
                "model",
                "batch",
                "method",
                "torch fwd ms",
                "Zennit ms",
                "Zennit ÷ torch fwd",
                "ORT fwd ms",
                "lrpc ms",
                "lrpc ÷ ORT fwd",
                "lrpc ÷ Zennit",
                "speed-up",
                "target",
                "",
            ],
            zennit_rows(result),
        )
    if result["innvestigate"]:
        lines += ["", "## iNNvestigate 2.1.2 (TF graph mode), same weights", "", innvestigate_note(result), ""]
        head = [
            "model",
            "batch",
            "analyzer",
            "ORT fwd ms",
            "iNNvestigate ms",
            "iNNv ÷ ORT fwd",
            "first call",
            "lrpc ms",
            "lrpc ÷ ORT fwd",
            "lrpc ÷ iNNv",
            "speed-up",
            "target",
            "",
        ]
        lines += table(head, innvestigate_rows(result))
    return "\n".join(lines) + "\n"


ZENNIT_NOTE = (
    "Each cell interleaves four steps in one process: onnxruntime forward (ORT fwd), torch forward under "
    "`torch.no_grad()`, Zennit's explanation as a user runs it (`with composite.context(model)`, forward, "
    "one-hot of the largest logit, `torch.autograd.grad`; entering the context — hooks, and for ResNet-50 the "
    "BatchNorm-merge and residual-sum canonizers of benchmarks/zennit_ref.py — is inside the timed call) and "
    "lrpc's explained graph (ORT, spinning off as above). Zennit ÷ torch fwd is Zennit's own overhead; "
    "lrpc ÷ Zennit is wall time against wall time; speed-up = Zennit ÷ lrpc. Part of it is the runtime: "
    "compare the two forward columns."
)


def innvestigate_note(result) -> str:
    checks = ", ".join(
        f"{NAMES[k]} {v['keras']['logits_rel']:.1e}"
        for k, v in sorted(result["models"].items(), key=lambda kv: list(NAMES).index(kv[0]))
        if "logits_rel" in v.get("keras", {})
    )
    return (
        "The Keras models are rebuilt layer by layer from the torch models and carry the same weights "
        "(transposed to Keras' layouts; ResNet-50 keeps its BatchNorm layers, torch's ε). Keras' logits "
        f"against torch's, relative L2: {checks}. Each cell interleaves an onnxruntime forward, lrpc's "
        "counterpart (benchmarks/fidelity.py's mapping: rule epsilon / alpha1beta0 under convention "
        "innvestigate) and `analyzer.analyze(x)` in a .venv-innvestigate process that times the call "
        "itself (no pipe latency) and idles between calls. First call: `create_analyzer` plus the first "
        "`analyze`, which builds the analyzer's graph."
    )
