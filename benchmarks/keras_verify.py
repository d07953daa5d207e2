"""`lrpc verify` on keras.applications convnets (issue 18): which cells fail, and is it a wrong graph or float32?

Run in the TensorFlow environment (scripts/keras_env.sh); ~2 h on 2 cores for everything:

    .venv-keras/bin/python benchmarks/keras_verify.py all --work /tmp/keras_verify     # build, cells, gxi, savedmodel
    .venv-keras/bin/python benchmarks/keras_verify.py report --work /tmp/keras_verify  # the markdown tables
    .venv-keras/bin/python benchmarks/keras_verify.py cells --model resnet50v2 --rule epsilon   # one cell

``--pin`` runs lrpc as committed (``git archive HEAD compiler runtime`` into WORK/lrpc-COMMIT, first on
PYTHONPATH), not the working tree, which others may be editing during a two-hour run.

Stages (each appends to WORK/results.jsonl and skips what is already there, so a run can be resumed):

- ``build``: keras.applications MODELS (weights=None, seeded 0, 10 classes, logits, 64×64 inputs) with every
  BatchNormalization's moving statistics set to those of one seeded batch of 64 images
  (models/keras_models.reset_batchnorm), saved as NAME.keras; also NAME.onnx (lrpc's Keras frontend, the
  source of the SavedModel stage) and, for resnet50v2/densenet121, the same without the BN reset
  (NAME_nobn.keras) and NAME_bnfix.onnx: every per-channel Mul→Add pair (a Keras BatchNormalization as
  tf2onnx writes it) that lrpc leaves unfolded rewritten as an ONNX BatchNormalization node, which lrpc
  turns into a depthwise 1×1 conv when it has no linear neighbour (fold_batchnorm.py) — what the README's
  Canonization section promises for the Mul/Add form too. The images: 4 seeded ones, uniform [0, 255]
  (keras_models.images seed 7), not the batch the statistics came from.
- ``cells``: per model × RULES: ``lrpc compile NAME.keras [rule] -o FILE`` (the CLI), then
  ``lrpc verify FILE --source NAME.keras --inputs images.npy`` and ``lrpc verify FILE`` (4 random [0, 1)
  samples, seed 0), both through lrpc.verify, the function the CLI prints. Recorded: both verdicts and
  float64 errors, per sample S₀, Σ relevance (float32) and finiteness. Then this script's own float64 run
  of FILE on the images (the reference evaluator as verify runs it, with a correct MaxUnpool: onnx 1.23's
  ignores the output_shape input, so verify cannot run any graph whose MaxPool output is not the
  inferred size — ResNet50V2's 1×1/2 shortcut pools; see KERAS_VERIFY.md) and the conditioning probe κ:
  the same float64 graph on inputs, and on inputs and weights (every float initializer), each multiplied
  by (1 + 2⁻²⁴·u), u ~ U(−1, 1) — a float32 rounding — and how far the float64 relevance moves,
  max|ΔR| / max|R| per sample. A float32 error as large as κ is conditioning: float64 itself cannot tell
  those maps apart at the precision float32 stores inputs and weights in.
- ``gxi``: an independent reference for the ReLU nets (no op but linear, ReLU, MaxPool, Add, Concatenate,
  padding): with ε → 0 LRP-ε is gradient × input there, exactly. TensorFlow's float64 x ⊙ ∇f (the Keras
  model rebuilt with floatx float64, the same weights) against lrpc's ``epsilon:eps=1e-12`` file run in
  float64 (and TF's float32 x ⊙ ∇f against its float64: how well conditioned gradient × input itself is).
- ``savedmodel``: NAME.onnx → ``lrpc compile NAME.onnx [rule] --format savedmodel -o DIR`` and the same
  explained ONNX file; the SavedModel run in a child process with TF_ENABLE_ONEDNN_OPTS=0 and one with =1;
  max|TF − onnxruntime| / max|onnxruntime| for the relevance and the logits, and each one's distance from
  the float64 run of the explained file (max|· − R₆₄| / max|R₆₄|).

Every other stage sets TF_ENABLE_ONEDNN_OPTS=0 (as tests/keras/conftest.py). Outputs: WORK/results.jsonl;
``report`` prints the tables of benchmarks/KERAS_VERIFY.md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np
import onnx
from onnx import helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "models"))

SIZE = 64
MODELS = {  # key: keras.applications constructor
    "resnet50v2": "ResNet50V2", "densenet121": "DenseNet121", "resnet50": "ResNet50", "mobilenetv2": "MobileNetV2",
    "efficientnetb0": "EfficientNetB0", "convnexttiny": "ConvNeXtTiny", "vgg16": "VGG16"}
RELU_NETS = ("resnet50v2", "densenet121", "resnet50", "vgg16")  # LRP-0 = gradient × input exactly
VARIANT_MODELS = ("resnet50v2", "densenet121")  # also built without the BN reset, and with the BN fix
RULES = {  # key: lrpc compile options
    "EpsilonPlusFlat": [], "epsilon": ["--rule", "epsilon"], "epsilon:eps=1e-3": ["--rule", "epsilon:eps=1e-3"],
    "EpsilonGammaBox:low=-3,high=3": ["--composite", "EpsilonGammaBox:low=-3,high=3"],
    "alpha1beta0": ["--rule", "alpha1beta0"], "epsilon:eps=1e-12": ["--rule", "epsilon:eps=1e-12"]}
MAIN_RULES = ("EpsilonPlusFlat", "epsilon", "epsilon:eps=1e-3", "EpsilonGammaBox:low=-3,high=3", "alpha1beta0")
ROUND = 2.0 ** -24  # float32's relative rounding (half an ulp)


# ---------------------------------------------------------------- float64 runs


def _maxunpool_op():
    from onnx.reference.op_run import OpRun

    class MaxUnpool(OpRun):
        """MaxUnpool by the spec: Y of `output_shape`, Y.flat[indices] = X. onnx 1.23's reference op fills a
        tensor of the inferred shape ((in − 1)·s + k − pads) with indices meant for output_shape, so it
        fails (IndexError) or misplaces values whenever output_shape is larger."""

        def _run(self, X, indices, output_shape=None, kernel_shape=None, pads=None, strides=None):
            if output_shape is None:
                raise NotImplementedError("MaxUnpool without output_shape")
            shape = tuple(int(d) for d in output_shape)
            y = np.zeros(int(np.prod(shape)), X.dtype)
            y[indices.reshape(-1)] = X.reshape(-1)
            return (y.reshape(shape),)

    return MaxUnpool


def run_float64(proto: onnx.ModelProto, feeds: dict, names: list[str], weight_noise=None) -> dict:
    """`proto` in double precision as lrpc verify runs it (lrpc.verify.float64), MaxUnpool by the spec.
    weight_noise: a Generator: every float initializer × (1 + 2⁻²⁴·u) first."""
    from lrpc.verify.float64 import as_double
    from lrpc.verify.reference_maxpool import MaxPool
    from lrpc.verify.reference_pad import Pad
    from onnx.reference import ReferenceEvaluator

    double = as_double(proto)
    if weight_noise is not None:
        for t in double.graph.initializer:
            if t.data_type == onnx.TensorProto.DOUBLE:
                w = numpy_helper.to_array(t)
                t.CopyFrom(numpy_helper.from_array(w * (1 + ROUND * weight_noise.uniform(-1, 1, w.shape)), t.name))
    evaluator = ReferenceEvaluator(double, new_ops=[MaxPool, Pad, _maxunpool_op()])
    feeds = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in feeds.items()}
    return dict(zip(names, evaluator.run(names, feeds)))


def flat(a) -> np.ndarray:
    a = np.asarray(a, np.float64)
    return a.reshape(len(a), -1)


def rel(a, b) -> list[float]:
    """max|a − b| / max|b| per sample (inf/nan kept as inf)."""
    a, b = flat(a), flat(b)
    with np.errstate(invalid="ignore", over="ignore"):
        d = np.abs(a - b).max(1) / np.maximum(np.abs(b).max(1), np.finfo(np.float64).tiny)
    return [float(v) if np.isfinite(v) else float("inf") for v in d]


def ort_run(path_or_proto, x: np.ndarray) -> dict:
    import onnxruntime as ort

    data = path_or_proto if isinstance(path_or_proto, (str, Path)) else path_or_proto.SerializeToString()
    sess = ort.InferenceSession(str(data) if isinstance(data, Path) else data, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, {sess.get_inputs()[0].name: x})))


# ---------------------------------------------------------------- models


def build_keras(constructor: str, reset: bool):
    import keras
    import keras_models

    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, constructor)(weights=None, input_shape=(SIZE, SIZE, 3), classes=10,
                                                     classifier_activation=None)
    if reset:
        keras_models.reset_batchnorm(model, keras_models.images((SIZE, SIZE, 3), 0, n=64))
    return model


def bn_as_batchnormalization(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Each per-channel Mul(c₁) → Add(c₂) on a rank-4 NCHW tensor as BatchNormalization(γ=c₁, β=c₂, μ=0,
    σ²=1, ε=0): the same function; lrpc folds it into a neighbouring linear layer or makes it a depthwise
    1×1 conv (a layer with a bias, which takes its share of relevance)."""
    g = proto.graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    consts.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in g.node
                   if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
    inferred = onnx.shape_inference.infer_shapes(proto)
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
              for v in list(inferred.graph.value_info) + list(inferred.graph.input)}
    users: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    replace, drop = {}, set()
    for n in g.node:
        if n.op_type != "Mul" or len(users.get(n.output[0], [])) != 1:
            continue
        a, c = (n.input[0], n.input[1]) if n.input[1] in consts else (n.input[1], n.input[0])
        add = users[n.output[0]][0]
        d = [i for i in add.input if i != n.output[0]] if add.op_type == "Add" else []
        shape = shapes.get(a)
        if c not in consts or a in consts or len(d) != 1 or d[0] not in consts or not shape or len(shape) != 4:
            continue
        channels = shape[1]
        c1, c2 = consts[c], consts[d[0]]
        if channels is None or any(v.ndim < 3 or v.size != channels or v.shape[-3:] != (channels, 1, 1)
                                   for v in (c1, c2)):
            continue  # not a per-channel constant on axis 1
        k = len(replace)
        names = [f"bn_as_batchnormalization_{k}_{s}" for s in ("scale", "bias", "mean", "var")]
        for value, name in zip((c1.reshape(-1), c2.reshape(-1), np.zeros(channels), np.ones(channels)), names):
            g.initializer.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        replace[id(add)] = helper.make_node("BatchNormalization", [a, *names], [add.output[0]], epsilon=0.0,
                                            name=n.name.rsplit("/", 1)[0] + "/BatchNormalization")
        drop.add(id(n))
    nodes = [replace.get(id(n), n) for n in g.node if id(n) not in drop]
    del g.node[:]
    g.node.extend(nodes)
    return proto, len(replace)


def stage_build(work: Path, models) -> None:
    import keras_models
    from lrpc.frontend.keras import from_keras_model

    np.save(work / "images.npy", keras_models.images((SIZE, SIZE, 3), seed=7, n=4))
    for key in models:
        for reset, suffix in ((True, ""), (False, "_nobn")):
            if not reset and key not in VARIANT_MODELS:
                continue
            path = work / f"{key}{suffix}.keras"
            if path.exists():
                continue
            model = build_keras(MODELS[key], reset)
            model.save(path)
            if reset:
                proto = from_keras_model(model)
                onnx.save(proto, work / f"{key}.onnx")
                if key in VARIANT_MODELS:
                    fixed, n = bn_as_batchnormalization(proto)
                    onnx.save(fixed, work / f"{key}_bnfix.onnx")
                    print(f"{key}: {n} Mul→Add pairs rewritten as BatchNormalization", flush=True)
            logits = model(np.load(work / "images.npy")).numpy()
            record(work, dict(stage="build", model=key, variant=suffix.strip("_") or "bnreset",
                              max_abs_logit=float(np.abs(logits).max()), logits_max=logits.max(1).tolist()))
            print(f"built {path.name}: max |logit| {np.abs(logits).max():.3g}", flush=True)


# ---------------------------------------------------------------- results


def record(work: Path, row: dict) -> None:
    with open(work / "results.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


def done(work: Path) -> set:
    path = work / "results.jsonl"
    if not path.exists():
        return set()
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {(r["stage"], r.get("model"), r.get("variant"), r.get("rule")) for r in rows}


def results(work: Path) -> list[dict]:
    rows = {}
    for line in (work / "results.jsonl").read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            rows[(r["stage"], r.get("model"), r.get("variant"), r.get("rule"))] = r  # the last run wins
    return list(rows.values())


# ---------------------------------------------------------------- cells


def _check(report, name):
    return next((c for c in report.checks if c.name == name), None)


def _summary(report) -> dict:
    f64 = _check(report, "float64")
    return dict(verdict=report.verdict(), passed=report.passed, float64_status=f64 and f64.status,
                float64_detail=f64 and f64.detail, errors=[r["error"] for r in report.rows],
                start=[r["start"] for r in report.rows], relevance_sum=[r["relevance_sum"] for r in report.rows],
                finite=[r["finite"] for r in report.rows])


def stage_cell(work: Path, key: str, variant: str, rule: str) -> dict:
    import lrpc
    from lrpc.cli import main

    source = work / {"bnreset": f"{key}.keras", "nobn": f"{key}_nobn.keras", "bnfix": f"{key}_bnfix.onnx"}[variant]
    out = work / "explained" / f"{key}_{variant}_{rule.replace(':', '_').replace(',', '_')}.onnx"
    out.parent.mkdir(exist_ok=True)
    x = np.load(work / "images.npy")
    row = dict(stage="cells", model=key, variant=variant, rule=rule, file=str(out),
               lrpc=os.environ.get("KERAS_VERIFY_PINNED", "working tree"))
    t0 = time.time()
    log = io.StringIO()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        status = main(["compile", str(source), *RULES[rule], "-o", str(out), "--overwrite"])
    row["compile_s"] = round(time.time() - t0, 1)
    if status != 0:
        row["compile_error"] = log.getvalue().strip().splitlines()[-1:]
        return row
    row["source"] = _summary(lrpc.verify(str(out), source=str(source), inputs=x))
    row["own_random"] = _summary(lrpc.verify(str(out)))
    proto = onnx.load(out)
    feeds = {proto.graph.input[0].name: x}
    got = ort_run(out, x)
    names = [o.name for o in proto.graph.output]
    base = run_float64(proto, feeds, names)
    rng = np.random.default_rng(0)
    moved_x = run_float64(proto, {k: v * (1 + ROUND * rng.uniform(-1, 1, v.shape)) for k, v in feeds.items()},
                          ["relevance"])
    moved_xw = run_float64(proto, {k: v * (1 + ROUND * rng.uniform(-1, 1, v.shape)) for k, v in feeds.items()},
                           ["relevance"], weight_noise=rng)
    r64 = flat(base["relevance"])
    row.update(own_images=dict(
        errors=rel(got["relevance"], base["relevance"]), output_errors=rel(got[names[0]], base[names[0]]),
        relevance_sum64=r64.sum(1).tolist(), max_abs_relevance64=np.abs(r64).max(1).tolist(),
        finite32=bool(np.isfinite(got["relevance"]).all()), finite64=bool(np.isfinite(r64).all())),
        kappa_x=rel(moved_x["relevance"], base["relevance"]),
        kappa_xw=rel(moved_xw["relevance"], base["relevance"]), seconds=round(time.time() - t0, 1))
    return row


# ---------------------------------------------------------------- gradient × input


def gradient_x_input(model, x: np.ndarray, dtype) -> tuple[np.ndarray, np.ndarray]:
    import tensorflow as tf

    xt = tf.constant(x.astype(dtype))
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = model(xt)
        score = tf.gather(y, tf.argmax(y, 1), batch_dims=1)
    return (xt * tape.gradient(score, xt)).numpy(), score.numpy()


def stage_gxi(work: Path, key: str, variant: str) -> dict:
    import keras

    x = np.load(work / "images.npy")
    cell = next((r for r in results(work) if r["stage"] == "cells" and r["model"] == key
                 and r["variant"] == variant and r["rule"] == "epsilon:eps=1e-12"), None)
    if cell is None or "own_images" not in cell:
        raise SystemExit(f"gxi {key} {variant}: run the cell epsilon:eps=1e-12 first")
    model = keras.saving.load_model(work / f"{key}.keras")
    g32, _ = gradient_x_input(model, x, np.float32)
    keras.config.set_floatx("float64")
    try:
        m64 = getattr(keras.applications, MODELS[key])(weights=None, input_shape=(SIZE, SIZE, 3), classes=10,
                                                       classifier_activation=None)
        m64.set_weights([w.astype(np.float64) for w in model.get_weights()])
        g64, s64 = gradient_x_input(m64, x, np.float64)
    finally:
        keras.config.set_floatx("float32")
    proto = onnx.load(cell["file"])
    r = run_float64(proto, {proto.graph.input[0].name: x}, ["relevance"])["relevance"]
    r32 = ort_run(cell["file"], x)["relevance"]
    return dict(stage="gxi", model=key, variant=variant, rule="epsilon:eps=1e-12",
                lrp64_vs_gxi64=rel(r, g64), lrp32_vs_gxi32=rel(r32, g32), gxi32_vs_gxi64=rel(g32, g64),
                gxi_sum64=flat(g64).sum(1).tolist(), lrp_sum64=flat(r).sum(1).tolist(), start64=s64.tolist())


# ---------------------------------------------------------------- SavedModel


def savedmodel_child(folder: str, images: str, out: str) -> None:
    """Run in a fresh process (TF_ENABLE_ONEDNN_OPTS set by the parent): every output of the SavedModel."""
    import tensorflow as tf

    names = json.loads((Path(folder) / "assets.extra" / "lrpc.json").read_text())["names"]
    serve = tf.saved_model.load(folder).signatures["serving_default"]
    (arg,) = names["inputs"].values()
    got = serve(**{arg: tf.constant(np.load(images))})
    np.savez(out, **{k: v.numpy() for k, v in got.items()})  # keyed by signature name


def stage_savedmodel(work: Path, key: str, rule: str) -> dict:
    from lrpc.cli import main

    x = np.load(work / "images.npy")
    base = work / "savedmodel" / f"{key}_{rule.replace(':', '_').replace(',', '_')}"
    base.mkdir(parents=True, exist_ok=True)
    source = str(work / f"{key}.onnx")
    log = io.StringIO()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        s1 = main(["compile", source, *RULES[rule], "-o", str(base / "explained.onnx"), "--overwrite"])
        s2 = main(["compile", source, *RULES[rule], "--format", "savedmodel", "-o", str(base / "sm")])
    row = dict(stage="savedmodel", model=key, variant="bnreset", rule=rule)
    if s1 or s2:
        row["error"] = log.getvalue().strip().splitlines()[-1:]
        return row
    proto = onnx.load(base / "explained.onnx")
    names = [o.name for o in proto.graph.output]
    got = ort_run(base / "explained.onnx", x)
    want = run_float64(proto, {proto.graph.input[0].name: x}, names)
    row["ort_vs_f64"] = {n: rel(got[n], want[n]) for n in names}
    for onednn in ("0", "1"):
        out = base / f"tf_onednn{onednn}.npz"
        env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=onednn)
        subprocess.run([sys.executable, __file__, "savedmodel-child", str(base / "sm"), str(work / "images.npy"),
                        str(out)], check=True, env=env)
        tf_out = np.load(out)
        key = json.loads((base / "sm" / "assets.extra" / "lrpc.json").read_text())["names"]["outputs"]
        row[f"onednn{onednn}"] = {n: dict(tf_vs_ort=rel(tf_out[key[n]], got[n]), tf_vs_f64=rel(tf_out[key[n]], want[n]))
                                  for n in names}
    return row


# ---------------------------------------------------------------- report


def _fmt(v, spec=".1e"):
    if v is None:
        return "—"
    if isinstance(v, float) and not np.isfinite(v):
        return "inf"
    return format(v, spec)


def _span(values, spec=".1e"):
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    lo, hi = min(values), max(values)
    return _fmt(hi, spec) if lo == hi else f"{_fmt(lo, spec)} … {_fmt(hi, spec)}"


def _verdict(summary) -> str:
    if summary["passed"]:
        return "pass"
    v = summary["verdict"]
    return "NOT RUN" if v.startswith("NOT VERIFIED") else v.replace("FAILED: ", "FAIL ").split(" (")[0]


def report(work: Path) -> str:
    rows = results(work)
    lines = []
    cells = [r for r in rows if r["stage"] == "cells"]
    order = {k: i for i, k in enumerate(MODELS)}
    rule_order = {k: i for i, k in enumerate(RULES)}
    cells.sort(key=lambda r: (["bnreset", "bnfix", "nobn"].index(r["variant"]), order[r["model"]],
                              rule_order[r["rule"]]))
    lines += ["| model | BN | rule | verify --source | verify (random) | float32 vs float64 | κ: x | κ: x, W "
              "| Σ R / S₀ (float32) | max abs R₆₄ | finite |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in cells:
        if "compile_error" in r:
            lines.append(f"| {r['model']} | {r['variant']} | {r['rule']} | compile: {r['compile_error']} |"
                         + " |" * 7)
            continue
        s, o, own = r["source"], r["own_random"], r["own_images"]
        ratio = [rs / st if st else None for rs, st in zip(s["relevance_sum"], s["start"])]
        src_err = s["errors"] if s["float64_status"] != "skipped" else None
        lines.append(
            f"| {r['model']} | {r['variant']} | {r['rule']} | {_verdict(s)}"
            + (f" ({_span(src_err)})" if src_err else "") + f" | {_verdict(o)}"
            + (f" ({_span(o['errors'])})" if o["float64_status"] != "skipped" else "")
            + f" | {_span(own['errors'])} | {_span(r['kappa_x'])} | {_span(r['kappa_xw'])} | {_span(ratio, '.3g')} "
            f"| {_span(own['max_abs_relevance64'], '.1e')} | {'yes' if all(s['finite']) else 'NO'} |")
    gxi = [r for r in rows if r["stage"] == "gxi"]
    if gxi:
        lines += ["", "| model | BN | lrpc ε=1e-12 float64 vs TF x⊙∇f float64 | lrpc float32 vs TF float32 "
                  "| TF float32 vs float64 | Σ x⊙∇f₆₄ | Σ R₆₄ (lrpc) |", "|---|---|---|---|---|---|---|"]
        for r in sorted(gxi, key=lambda r: (r["variant"], order[r["model"]])):
            lines.append(f"| {r['model']} | {r['variant']} | {_span(r['lrp64_vs_gxi64'])} | {_span(r['lrp32_vs_gxi32'])} "
                         f"| {_span(r['gxi32_vs_gxi64'])} | {_span(r['gxi_sum64'], '.3g')} "
                         f"| {_span(r['lrp_sum64'], '.3g')} |")
    sm = [r for r in rows if r["stage"] == "savedmodel"]
    if sm:
        lines += ["", "| model | rule | relevance: TF−ORT, oneDNN off | TF−ORT, oneDNN on | ORT vs float64 "
                  "| TF off vs float64 | TF on vs float64 | logits TF−ORT off / on |", "|---|---|---|---|---|---|---|---|"]
        for r in sorted(sm, key=lambda r: (order[r["model"]], rule_order[r["rule"]])):
            if "error" in r:
                lines.append(f"| {r['model']} | {r['rule']} | {r['error']} |" + " |" * 5)
                continue
            names = list(r["ort_vs_f64"])
            rn, ln = names[-1], names[0]
            off, on = r["onednn0"], r["onednn1"]
            lines.append(f"| {r['model']} | {r['rule']} | {_fmt(max(off[rn]['tf_vs_ort']))} | "
                         f"{_fmt(max(on[rn]['tf_vs_ort']))} | {_fmt(max(r['ort_vs_f64'][rn]))} | "
                         f"{_fmt(max(off[rn]['tf_vs_f64']))} | {_fmt(max(on[rn]['tf_vs_f64']))} | "
                         f"{_fmt(max(off[ln]['tf_vs_ort']))} / {_fmt(max(on[ln]['tf_vs_ort']))} |")
    builds = [r for r in rows if r["stage"] == "build"]
    if builds:
        lines += ["", "| model | BN statistics | max abs logit on the images |", "|---|---|---|"]
        for r in sorted(builds, key=lambda r: (order[r["model"]], r["variant"])):
            lines.append(f"| {r['model']} | {r['variant']} | {r['max_abs_logit']:.3g} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def pinned(work: Path, argv: list[str]) -> int:
    """Run this script again with lrpc (compiler/, runtime/) as committed at HEAD first on PYTHONPATH."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.strip()
    snap = work / f"lrpc-{commit}"
    if not (snap / "site").exists():
        (snap / "src").mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", "HEAD", "compiler", "runtime"], cwd=ROOT, capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(snap / "src")], input=archive, check=True)
        (snap / "site").mkdir()
        (snap / "site" / "lrpc").symlink_to(snap / "src" / "compiler")
        (snap / "site" / "lrpc_runtime").symlink_to(snap / "src" / "runtime")
    env = dict(os.environ, KERAS_VERIFY_PINNED=commit,
               PYTHONPATH=os.pathsep.join([str(snap / "site"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    print(f"lrpc pinned at {commit} ({snap})", flush=True)
    return subprocess.run([sys.executable, __file__, *argv], env=env, check=False).returncode


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage", choices=["all", "build", "cells", "gxi", "savedmodel", "report", "savedmodel-child"])
    ap.add_argument("args", nargs="*", help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, default=Path("/tmp/keras_verify"))
    ap.add_argument("--model", action="append", choices=list(MODELS), help="default: every model")
    ap.add_argument("--variant", action="append", choices=["bnreset", "bnfix", "nobn"])
    ap.add_argument("--rule", action="append", choices=list(RULES))
    ap.add_argument("--force", action="store_true", help="run cells already in results.jsonl again")
    ap.add_argument("--pin", action="store_true", help="run lrpc as committed at HEAD (see the docstring)")
    a = ap.parse_args(argv)
    if a.pin and not os.environ.get("KERAS_VERIFY_PINNED"):
        return pinned(a.work, sys.argv[1:] if argv is None else argv)
    if a.stage == "savedmodel-child":
        savedmodel_child(*a.args)
        return 0
    a.work.mkdir(parents=True, exist_ok=True)
    models = a.model or list(MODELS)
    if a.stage == "report":
        print(report(a.work))
        return 0
    if a.stage in ("all", "build"):
        stage_build(a.work, models)
    have = set() if a.force else done(a.work)
    plan = []
    for key in models:
        for variant in a.variant or ["bnreset", "bnfix", "nobn"]:
            if variant != "bnreset" and key not in VARIANT_MODELS:
                continue
            rules = a.rule or (list(MAIN_RULES) if variant != "nobn" else ["EpsilonPlusFlat", "epsilon"])
            if key in RELU_NETS and variant != "nobn" and not a.rule:
                rules = [*rules, "epsilon:eps=1e-12"]
            plan += [(key, variant, rule) for rule in rules]
    if a.stage in ("all", "cells"):
        for key, variant, rule in plan:
            if ("cells", key, variant, rule) in have:
                continue
            row = stage_cell(a.work, key, variant, rule)
            record(a.work, row)
            print(f"{key} {variant} {rule}: {row.get('source', {}).get('verdict', row.get('compile_error'))} "
                  f"({row.get('seconds', row['compile_s'])} s)", flush=True)
    if a.stage in ("all", "gxi"):
        for key, variant in sorted({(k, v) for k, v, _ in plan if k in RELU_NETS and v != "nobn"}):
            if ("gxi", key, variant, "epsilon:eps=1e-12") not in have:
                record(a.work, stage_gxi(a.work, key, variant))
                print(f"gxi {key} {variant} done", flush=True)
    if a.stage in ("all", "savedmodel"):
        for key in models:
            for rule in a.rule or ["EpsilonPlusFlat", "epsilon"]:
                if ("savedmodel", key, "bnreset", rule) not in have:
                    record(a.work, stage_savedmodel(a.work, key, rule))
                    print(f"savedmodel {key} {rule} done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
