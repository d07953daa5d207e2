"""`lrpc verify` on keras.applications convnets (issue 18): which cells fail, and is it a wrong graph or float32?

Run in the TensorFlow environment (scripts/keras_env.sh); 2–3 h on 2 cores for everything:

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
- ``verdicts``: only the compile and the two verify runs, for the verdict columns at another commit (``--pin``
  at a later HEAD, in a work folder holding the same .keras files and images.npy).
- ``probe`` (cells more than 1e-3 off float64) and ``probe-random`` (cells that pass on the images and fail on
  verify's own random inputs, run on those): κ with float32-size rounding at *every* op (each computed tensor ×
  (1 + u), u ~ U(−2⁻²⁴, 2⁻²⁴), drawn in the graph), and a second float32 implementation — onnx's reference
  evaluator in float32 — against float64 and against onnxruntime. Two float32 runs as far apart as each is from
  float64 are rounding-driven; two that agree and are both off point at something systematic (or a tie that
  float32 cannot resolve: then κ moves float64 as much).
- ``flips``: ReLU inputs whose sign differs between lrpc's graph (the BN-fixed ONNX) and the Keras model, both
  in float64 — the discrete events behind the gradient × input differences.
- ``large``: DenseNet121 at 224×224 under ε and the default composite: finite or not, today and with the BN fix.
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
    "resnet50v2": "ResNet50V2",
    "densenet121": "DenseNet121",
    "resnet50": "ResNet50",
    "mobilenetv2": "MobileNetV2",
    "efficientnetb0": "EfficientNetB0",
    "convnexttiny": "ConvNeXtTiny",
    "vgg16": "VGG16",
}
RELU_NETS = ("resnet50v2", "densenet121", "resnet50", "vgg16")  # LRP-0 = gradient × input exactly
VARIANT_MODELS = ("resnet50v2", "densenet121")  # also built without the BN reset, and with the BN fix
RULES = {  # key: lrpc compile options
    "EpsilonPlusFlat": [],
    "epsilon": ["--rule", "epsilon"],
    "epsilon:eps=1e-3": ["--rule", "epsilon:eps=1e-3"],
    "EpsilonGammaBox:low=-3,high=3": ["--composite", "EpsilonGammaBox:low=-3,high=3"],
    "alpha1beta0": ["--rule", "alpha1beta0"],
    "epsilon:eps=1e-12": ["--rule", "epsilon:eps=1e-12"],
}
MAIN_RULES = ("EpsilonPlusFlat", "epsilon", "epsilon:eps=1e-3", "EpsilonGammaBox:low=-3,high=3", "alpha1beta0")
ROUND = 2.0**-24  # float32's relative rounding (half an ulp)
STAGES = (
    "all",
    "build",
    "cells",
    "verdicts",
    "probe",
    "probe-random",
    "gxi",
    "flips",
    "large",
    "savedmodel",
    "report",
    "savedmodel-child",
)


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


def run_float64(
    proto: onnx.ModelProto, feeds: dict, names: list[str], weight_noise=None, every_tensor: bool = False
) -> dict:
    """`proto` in double precision as lrpc verify runs it (lrpc.verify.float64), MaxUnpool by the spec.
    weight_noise: a Generator: every float initializer × (1 + 2⁻²⁴·u) first. every_tensor: every computed
    tensor perturbed too (perturb_every_tensor)."""
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
    if every_tensor:
        double = perturb_every_tensor(double)
    evaluator = ReferenceEvaluator(double, new_ops=[MaxPool, Pad, _maxunpool_op()])
    feeds = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in feeds.items()}
    return dict(zip(names, evaluator.run(names, feeds)))


def perturb_every_tensor(double: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """A copy of the float64 model in which every float64 tensor a node computes is multiplied by (1 + u),
    u ~ U(−2⁻²⁴, 2⁻²⁴) drawn per element in the graph (RandomUniformLike): float32's rounding at every op,
    in float64. The graph's outputs are left as computed."""
    model = onnx.shape_inference.infer_shapes(double)
    types = {v.name: v.type.tensor_type.elem_type for v in (*model.graph.value_info, *model.graph.input)}
    outputs = {o.name for o in model.graph.output}
    nodes = []
    for k, node in enumerate(model.graph.node):
        renamed = {}
        for name in node.output:
            if name and name not in outputs and types.get(name) == onnx.TensorProto.DOUBLE:
                renamed[name] = f"{name}__exact"
        exact = [renamed.get(n, n) for n in node.output]
        del node.output[:]
        node.output.extend(exact)
        nodes.append(node)
        for name, raw in renamed.items():
            u, du = f"{name}__u", f"{name}__du"
            nodes += [
                helper.make_node(
                    "RandomUniformLike",
                    [raw],
                    [u],
                    low=-ROUND,
                    high=ROUND,
                    dtype=onnx.TensorProto.DOUBLE,
                    seed=float(seed * 100003 + k),
                ),
                helper.make_node("Mul", [raw, u], [du]),
                helper.make_node("Add", [raw, du], [name]),
            ]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    del model.graph.value_info[:]
    return model


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
    model = getattr(keras.applications, constructor)(
        weights=None, input_shape=(SIZE, SIZE, 3), classes=10, classifier_activation=None
    )
    if reset:
        keras_models.reset_batchnorm(model, keras_models.images((SIZE, SIZE, 3), 0, n=64))
    return model


def bn_as_batchnormalization(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Each per-channel Mul(c₁) → Add(c₂) on a rank-4 NCHW tensor as BatchNormalization(γ=c₁, β=c₂, μ=0,
    σ²=1, ε=0): the same function; lrpc folds it into a neighbouring linear layer or makes it a depthwise
    1×1 conv (a layer with a bias, which takes its share of relevance)."""
    g = proto.graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    consts.update(
        {
            n.output[0]: numpy_helper.to_array(n.attribute[0].t)
            for n in g.node
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"
        }
    )
    inferred = onnx.shape_inference.infer_shapes(proto)
    shapes = {
        v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
        for v in list(inferred.graph.value_info) + list(inferred.graph.input)
    }
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
        if channels is None or any(
            v.ndim < 3 or v.size != channels or v.shape[-3:] != (channels, 1, 1) for v in (c1, c2)
        ):
            continue  # not a per-channel constant on axis 1
        k = len(replace)
        names = [f"bn_as_batchnormalization_{k}_{s}" for s in ("scale", "bias", "mean", "var")]
        for value, name in zip((c1.reshape(-1), c2.reshape(-1), np.zeros(channels), np.ones(channels)), names):
            g.initializer.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        replace[id(add)] = helper.make_node(
            "BatchNormalization",
            [a, *names],
            [add.output[0]],
            epsilon=0.0,
            name=n.name.rsplit("/", 1)[0] + "/BatchNormalization",
        )
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
            record(
                work,
                dict(
                    stage="build",
                    model=key,
                    variant=suffix.strip("_") or "bnreset",
                    max_abs_logit=float(np.abs(logits).max()),
                    logits_max=logits.max(1).tolist(),
                ),
            )
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
    return dict(
        verdict=report.verdict(),
        passed=report.passed,
        float64_status=f64 and f64.status,
        float64_detail=f64 and f64.detail,
        errors=[r["error"] for r in report.rows],
        start=[r["start"] for r in report.rows],
        relevance_sum=[r["relevance_sum"] for r in report.rows],
        finite=[r["finite"] for r in report.rows],
    )


def stage_cell(work: Path, key: str, variant: str, rule: str) -> dict:
    import lrpc
    from lrpc.cli import main

    source = work / {"bnreset": f"{key}.keras", "nobn": f"{key}_nobn.keras", "bnfix": f"{key}_bnfix.onnx"}[variant]
    out = work / "explained" / f"{key}_{variant}_{rule.replace(':', '_').replace(',', '_')}.onnx"
    out.parent.mkdir(exist_ok=True)
    x = np.load(work / "images.npy")
    row = dict(
        stage="cells",
        model=key,
        variant=variant,
        rule=rule,
        file=str(out),
        lrpc=os.environ.get("KERAS_VERIFY_PINNED", "working tree"),
    )
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
    moved_x = run_float64(
        proto, {k: v * (1 + ROUND * rng.uniform(-1, 1, v.shape)) for k, v in feeds.items()}, ["relevance"]
    )
    moved_xw = run_float64(
        proto,
        {k: v * (1 + ROUND * rng.uniform(-1, 1, v.shape)) for k, v in feeds.items()},
        ["relevance"],
        weight_noise=rng,
    )
    r64 = flat(base["relevance"])
    row.update(
        own_images=dict(
            errors=rel(got["relevance"], base["relevance"]),
            output_errors=rel(got[names[0]], base[names[0]]),
            relevance_sum64=r64.sum(1).tolist(),
            max_abs_relevance64=np.abs(r64).max(1).tolist(),
            finite32=bool(np.isfinite(got["relevance"]).all()),
            finite64=bool(np.isfinite(r64).all()),
        ),
        kappa_x=rel(moved_x["relevance"], base["relevance"]),
        kappa_xw=rel(moved_xw["relevance"], base["relevance"]),
        seconds=round(time.time() - t0, 1),
    )
    return row


def run_reference32(proto: onnx.ModelProto, feeds: dict, names: list[str]) -> dict:
    """The float32 file in onnx's reference evaluator (numpy): a second float32 implementation beside
    onnxruntime, with its own summation order."""
    from lrpc.verify.reference_maxpool import MaxPool
    from lrpc.verify.reference_pad import Pad
    from onnx.reference import ReferenceEvaluator

    evaluator = ReferenceEvaluator(proto, new_ops=[MaxPool, Pad, _maxunpool_op()])
    return dict(zip(names, evaluator.run(names, feeds)))


def verify_random_inputs(proto: onnx.ModelProto, samples: int = 4, seed: int = 0) -> np.ndarray:
    """The inputs `lrpc verify FILE` draws (lrpc.verify.inputs.make_feeds, seed 0): uniform [0, 1) pixels."""
    from lrpc.verify.inputs import make_feeds
    from lrpc.verify.load import lrpc_metadata

    feeds, _ = make_feeds(proto, lrpc_metadata(proto, "file"), None, samples, np.random.default_rng(seed))
    return feeds[proto.graph.input[0].name]


def stage_probe(work: Path, cell: dict, inputs: str = "images") -> dict:
    """For a cell whose float32 run is off float64: (1) κ with float32-size rounding at every op (inputs,
    weights and every computed tensor), in float64; (2) a second float32 implementation (onnx's reference
    evaluator in float32) against float64 and against onnxruntime. Two float32 runs that differ from each
    other as much as from float64 are rounding-driven; two that agree with each other and not with float64
    would point at an op the two runtimes compute differently from the float64 run. inputs "random": on the
    inputs `lrpc verify FILE` draws instead of the images."""
    proto = onnx.load(cell["file"])
    x = np.load(work / "images.npy") if inputs == "images" else verify_random_inputs(proto)
    feeds = {proto.graph.input[0].name: x}
    base = run_float64(proto, feeds, ["relevance"])["relevance"]
    rng = np.random.default_rng(1)
    moved = run_float64(
        proto,
        {k: v * (1 + ROUND * rng.uniform(-1, 1, v.shape)) for k, v in feeds.items()},
        ["relevance"],
        weight_noise=rng,
        every_tensor=True,
    )["relevance"]
    ref32 = run_reference32(proto, feeds, ["relevance"])["relevance"]
    ort32 = ort_run(cell["file"], x)["relevance"]
    return dict(
        stage="probe" if inputs == "images" else "probe-random",
        model=cell["model"],
        variant=cell["variant"],
        rule=cell["rule"],
        relevance_max64=np.abs(flat(base)).max(1).tolist(),
        kappa_all=rel(moved, base),
        ort32_vs_f64=rel(ort32, base),
        ref32_vs_f64=rel(ref32, base),
        ref32_vs_ort32=rel(ref32, ort32),
    )


def stage_verdict(work: Path, key: str, rule: str) -> dict:
    """Only what lrpc prints: compile, then verify --source on the images and verify on its own random inputs
    (for a quick re-run of the verdict columns at another commit)."""
    import lrpc
    from lrpc.cli import main

    source, x = work / f"{key}.keras", np.load(work / "images.npy")
    out = work / "explained" / f"{key}_verdict_{rule.replace(':', '_').replace(',', '_')}.onnx"
    out.parent.mkdir(exist_ok=True)
    log = io.StringIO()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        status = main(["compile", str(source), *RULES[rule], "-o", str(out), "--overwrite"])
    row = dict(
        stage="verdict",
        model=key,
        variant="bnreset",
        rule=rule,
        lrpc=os.environ.get("KERAS_VERIFY_PINNED", "working tree"),
    )
    if status != 0:
        row["compile_error"] = log.getvalue().strip().splitlines()[-1:]
        return row
    reports = lrpc.verify(str(out), source=str(source), inputs=x), lrpc.verify(str(out))
    row["source"], row["own_random"] = (dict(_summary(r), text=r.text()) for r in reports)
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
    cell = next(
        (
            r
            for r in results(work)
            if r["stage"] == "cells"
            and r["model"] == key
            and r["variant"] == variant
            and r["rule"] == "epsilon:eps=1e-12"
        ),
        None,
    )
    if cell is None or "own_images" not in cell:
        raise SystemExit(f"gxi {key} {variant}: run the cell epsilon:eps=1e-12 first")
    model = keras.saving.load_model(work / f"{key}.keras")
    g32, _ = gradient_x_input(model, x, np.float32)
    keras.config.set_floatx("float64")
    try:
        m64 = getattr(keras.applications, MODELS[key])(
            weights=None, input_shape=(SIZE, SIZE, 3), classes=10, classifier_activation=None
        )
        m64.set_weights([w.astype(np.float64) for w in model.get_weights()])
        g64, s64 = gradient_x_input(m64, x, np.float64)
    finally:
        keras.config.set_floatx("float32")
    proto = onnx.load(cell["file"])
    r = run_float64(proto, {proto.graph.input[0].name: x}, ["relevance"])["relevance"]
    r32 = ort_run(cell["file"], x)["relevance"]
    return dict(
        stage="gxi",
        model=key,
        variant=variant,
        rule="epsilon:eps=1e-12",
        lrp64_vs_gxi64=rel(r, g64),
        lrp32_vs_gxi32=rel(r32, g32),
        gxi32_vs_gxi64=rel(g32, g64),
        gxi_sum64=flat(g64).sum(1).tolist(),
        lrp_sum64=flat(r).sum(1).tolist(),
        start64=s64.tolist(),
    )


def stage_flips(work: Path, key: str) -> dict:
    """Where lrpc's graph (NAME_bnfix.onnx) and the Keras model, both in float64 on the images, disagree on the
    sign of a ReLU's input: per ReLU layer and sample, the count (only layers with a flip are kept)."""
    import keras

    x = np.load(work / "images.npy")
    model = keras.saving.load_model(work / f"{key}.keras")
    keras.config.set_floatx("float64")
    try:
        m64 = getattr(keras.applications, MODELS[key])(
            weights=None, input_shape=(SIZE, SIZE, 3), classes=10, classifier_activation=None
        )
        m64.set_weights([w.astype(np.float64) for w in model.get_weights()])
        relus = [
            layer.name
            for layer in m64.layers
            if isinstance(layer, keras.layers.Activation | keras.layers.ReLU) and "relu" in layer.name
        ]
        tf_in = keras.Model(m64.input, [m64.get_layer(n).input for n in relus])(x.astype(np.float64))
    finally:
        keras.config.set_floatx("float32")
    proto = onnx.load(work / f"{key}_bnfix.onnx")
    relu_in = {n.name.split("/")[0]: n.input[0] for n in proto.graph.node if n.op_type == "Relu"}
    del proto.graph.output[:]
    keys = [k for k in relus if k in relu_in]
    proto.graph.output.extend([helper.make_tensor_value_info(relu_in[k], onnx.TensorProto.FLOAT, None) for k in keys])
    ours = run_float64(proto, {proto.graph.input[0].name: x}, [relu_in[k] for k in keys])
    flips = {}
    for k, t in zip(relus, tf_in):
        if k not in relu_in:
            continue
        o, t = ours[relu_in[k]], t.numpy()
        if o.shape != t.shape:
            o = np.moveaxis(o, 1, -1)
        count = [int(((o[i] > 0) != (t[i] > 0)).sum()) for i in range(len(x))]
        if any(count):
            flips[k] = count
    return dict(stage="flips", model=key, variant="bnfix", rule="epsilon:eps=1e-12", flips=flips, layers=len(keys))


def stage_large(work: Path) -> dict:
    """DenseNet121 at 224×224 (BN reset on 16 images), 2 images: is the ε map finite in float32, today and with
    the BN fix (bn_as_batchnormalization)? onnxruntime only (a float64 run of this size takes too long here)."""
    import keras
    import keras_models
    import lrpc
    from lrpc.frontend.keras import from_keras_model

    keras.utils.set_random_seed(0)
    model = keras.applications.DenseNet121(
        weights=None, input_shape=(224, 224, 3), classes=10, classifier_activation=None
    )
    keras_models.reset_batchnorm(model, keras_models.images((224, 224, 3), 0, n=16))
    proto = from_keras_model(model)
    inputs = {
        "images": keras_models.images((224, 224, 3), seed=7, n=2),
        "random": np.random.default_rng(0).random((2, 224, 224, 3)).astype(np.float32),
    }
    row = dict(stage="large", model="densenet121", variant="bnreset", rule="224x224")
    for name, source in (
        ("today", proto),
        ("bnfix", bn_as_batchnormalization(onnx.ModelProto.FromString(proto.SerializeToString()))[0]),
    ):
        for rule in ("EpsilonPlusFlat", "epsilon"):
            explained = lrpc.compile(source, **({} if rule == "EpsilonPlusFlat" else {"rule": rule}))
            for what, x in inputs.items():
                out = ort_run(explained, x)
                r = flat(out["relevance"])
                row[f"{name} {rule} {what}"] = dict(
                    start=out[explained.graph.output[0].name].max(1).tolist(),
                    relevance_sum=r.sum(1).tolist(),
                    nan=int(np.isnan(r).sum()),
                    inf=int(np.isinf(r).sum()),
                    size=int(r.size),
                )
    return row


# ---------------------------------------------------------------- SavedModel


def savedmodel_child(folder: str, images: str, out: str, grappler: str = "default") -> None:
    """Run in a fresh process (TF_ENABLE_ONEDNN_OPTS set by the parent): every output of the SavedModel.
    grappler "nofold": Grappler's arithmetic optimizer and constant folding off, which otherwise fold the ε
    stabilizer's two power-of-two factors (lrpc's builder.sign_shift: z·2¹²⁷·2⁵) into one, z·inf, NaN at z = 0."""
    import tensorflow as tf

    if grappler == "nofold":
        tf.config.optimizer.set_experimental_options({"arithmetic_optimization": False, "constant_folding": False})
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
    key = json.loads((base / "sm" / "assets.extra" / "lrpc.json").read_text())["names"]["outputs"]
    for onednn in ("0", "1"):
        for grappler in ("default", "nofold"):
            out = base / f"tf_onednn{onednn}_{grappler}.npz"
            env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=onednn)
            subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "savedmodel-child",
                    str(base / "sm"),
                    str(work / "images.npy"),
                    str(out),
                    grappler,
                ],
                check=True,
                env=env,
            )
            tf_out = np.load(out)
            row[f"onednn{onednn}" + ("" if grappler == "default" else "_nofold")] = {
                n: dict(
                    tf_vs_ort=rel(tf_out[key[n]], got[n]),
                    tf_vs_f64=rel(tf_out[key[n]], want[n]),
                    nan=int(np.isnan(tf_out[key[n]]).sum()),
                )
                for n in names
            }
    return row


# ---------------------------------------------------------------- report


def _fmt(v, spec=".1e"):
    if v is None:
        return "—"
    if isinstance(v, float) and not np.isfinite(v):
        return "nan" if np.isnan(v) else "inf"
    return format(v, spec)


def _span(values, spec=".1e"):
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    if any(np.isnan(v) for v in values):
        return "nan"
    lo, hi = min(values), max(values)
    return _fmt(hi, spec) if lo == hi else f"{_fmt(lo, spec)} … {_fmt(hi, spec)}"


def _verdict(summary) -> str:
    if summary["passed"]:
        return "pass"
    v = summary["verdict"]
    if v.startswith("ILL-CONDITIONED"):
        return "ILL-CONDITIONED"
    return "NOT RUN" if v.startswith("NOT VERIFIED") else v.replace("FAILED: ", "FAIL ").split(" (")[0]


def report(work: Path) -> str:
    rows = results(work)
    lines = []
    cells = [r for r in rows if r["stage"] == "cells"]
    order = {k: i for i, k in enumerate(MODELS)}
    rule_order = {k: i for i, k in enumerate(RULES)}
    cells.sort(
        key=lambda r: (["bnreset", "bnfix", "nobn"].index(r["variant"]), order[r["model"]], rule_order[r["rule"]])
    )
    header = [
        "| model | BN | rule | verify --source | verify (random) | float32 vs float64 | κ: x | κ: x, W "
        "| Σ R / S₀ (float32) | max abs R₆₄ | finite |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    titles = {
        "bnreset": "lrpc as it is, BN statistics from one batch",
        "bnfix": "the same, BN Mul/Add pairs rewritten as BatchNormalization (the proposed fix, simulated)",
        "nobn": "lrpc as it is, Keras' initial BN statistics (no reset)",
    }
    variant = None
    for r in cells:
        if r["variant"] != variant:
            variant = r["variant"]
            lines += ["", f"**{titles[variant]}**", "", *header]
        if "compile_error" in r:
            lines.append(f"| {r['model']} | {r['variant']} | {r['rule']} | compile: {r['compile_error']} |" + " |" * 7)
            continue
        s, o, own = r["source"], r["own_random"], r["own_images"]
        ratio = [rs / st if st else None for rs, st in zip(s["relevance_sum"], s["start"])]
        src_err = s["errors"] if s["float64_status"] != "skipped" else None
        lines.append(
            f"| {r['model']} | {r['variant']} | {r['rule']} | {_verdict(s)}"
            + (f" ({_span(src_err)})" if src_err else "")
            + f" | {_verdict(o)}"
            + (f" ({_span(o['errors'])})" if o["float64_status"] != "skipped" else "")
            + f" | {_span(own['errors'])} | {_span(r['kappa_x'])} | {_span(r['kappa_xw'])} | {_span(ratio, '.3g')} "
            f"| {_span(own['max_abs_relevance64'], '.1e')} | {'yes' if all(s['finite']) else 'NO'} |"
        )
    verdicts = [r for r in rows if r["stage"] == "verdict" and "source" in r]
    if verdicts:
        lines += [
            "",
            f"**verify's verdicts at lrpc {verdicts[0]['lrpc']}** (a fresh compile; `verify --source` on the "
            "images, `verify` on its own inputs)",
            "",
            "| model | rule | verify --source | verify (random) |",
            "|---|---|---|---|",
        ]
        for r in sorted(verdicts, key=lambda r: (order[r["model"]], rule_order[r["rule"]])):
            s, o = r["source"], r["own_random"]
            lines.append(
                f"| {r['model']} | {r['rule']} | {_verdict(s)}"
                + (f" ({_span(s['errors'])})" if s["float64_status"] != "skipped" else "")
                + f" | {_verdict(o)}"
                + (f" ({_span(o['errors'])})" if o["float64_status"] != "skipped" else "")
                + " |"
            )
    gxi = [r for r in rows if r["stage"] == "gxi"]
    if gxi:
        lines += [
            "",
            "| model | BN | lrpc ε=1e-12 float64 vs TF x⊙∇f float64 | lrpc float32 vs TF float32 "
            "| TF float32 vs float64 | Σ x⊙∇f₆₄ | Σ R₆₄ (lrpc) |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in sorted(gxi, key=lambda r: (r["variant"], order[r["model"]])):
            lines.append(
                f"| {r['model']} | {r['variant']} | {_span(r['lrp64_vs_gxi64'])} "
                f"| {_span(r['lrp32_vs_gxi32'])} "
                f"| {_span(r['gxi32_vs_gxi64'])} | {_span(r['gxi_sum64'], '.3g')} "
                f"| {_span(r['lrp_sum64'], '.3g')} |"
            )
    sm = [r for r in rows if r["stage"] == "savedmodel"]
    if sm:
        lines += [
            "",
            "| model | rule | SavedModel relevance NaN (of 49152), oneDNN off / on | TF−ORT, oneDNN off "
            "| TF−ORT, oneDNN on | ORT vs float64 | TF off vs float64 | TF on vs float64 "
            "| logits TF−ORT off / on |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in sorted(sm, key=lambda r: (order[r["model"]], rule_order[r["rule"]])):
            if "error" in r:
                lines.append(f"| {r['model']} | {r['rule']} | {r['error']} |" + " |" * 6)
                continue
            names = list(r["ort_vs_f64"])
            rn, ln = names[-1], names[0]
            off, on = r.get("onednn0_nofold", r["onednn0"]), r.get("onednn1_nofold", r["onednn1"])
            nans = f"{r['onednn0'][rn].get('nan', '?')} / {r['onednn1'][rn].get('nan', '?')}"
            lines.append(
                f"| {r['model']} | {r['rule']} | {nans} | {_fmt(max(off[rn]['tf_vs_ort']))} | "
                f"{_fmt(max(on[rn]['tf_vs_ort']))} | {_fmt(max(r['ort_vs_f64'][rn]))} | "
                f"{_fmt(max(off[rn]['tf_vs_f64']))} | {_fmt(max(on[rn]['tf_vs_f64']))} | "
                f"{_fmt(max(off[ln]['tf_vs_ort']))} / {_fmt(max(on[ln]['tf_vs_ort']))} |"
            )
        lines.append(
            "(TF columns: Grappler's arithmetic optimizer and constant folding off where the row has that "
            "run, since with them on the relevance is NaN; the NaN column is TensorFlow's default.)"
        )
    probes = [r for r in rows if r["stage"] in ("probe", "probe-random")]
    if probes:
        lines += [
            "",
            "| model | BN | rule | inputs | onnxruntime vs float64 | reference evaluator float32 vs float64 "
            "| the two float32 runs apart | κ: rounding at every op |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in sorted(
            probes,
            key=lambda r: (
                r["stage"],
                ["bnreset", "bnfix", "nobn"].index(r["variant"]),
                order[r["model"]],
                rule_order[r["rule"]],
            ),
        ):
            lines.append(
                f"| {r['model']} | {r['variant']} | {r['rule']} | "
                f"{'images' if r['stage'] == 'probe' else 'verify random'} | {_span(r['ort32_vs_f64'])} "
                f"| {_span(r['ref32_vs_f64'])} | {_span(r['ref32_vs_ort32'])} | {_span(r['kappa_all'])} |"
            )
    for r in (r for r in rows if r["stage"] == "flips"):
        lines += [
            "",
            f"ReLU inputs of different sign, lrpc's graph ({r['model']}, BN fix) vs the Keras model, both "
            f"float64, per sample: "
            + (", ".join(f"{k} {v}" for k, v in r["flips"].items()) or "none")
            + f" (of {r['layers']} ReLU layers)",
        ]
    for r in (r for r in rows if r["stage"] == "large"):
        lines += ["", "| DenseNet121 224×224 | S₀ | Σ relevance | NaN | Inf |", "|---|---|---|---|---|"]
        for k, v in r.items():
            if isinstance(v, dict):
                lines.append(
                    f"| {k} | {_span(v['start'], '.3g')} | {_span(v['relevance_sum'], '.3g')} "
                    f"| {v['nan']} of {v['size']} | {v['inf']} |"
                )
    builds = [r for r in rows if r["stage"] == "build"]
    if builds:
        lines += ["", "| model | BN statistics | max abs logit on the images |", "|---|---|---|"]
        for r in sorted(builds, key=lambda r: (order[r["model"]], r["variant"])):
            lines.append(f"| {r['model']} | {r['variant']} | {r['max_abs_logit']:.3g} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def pinned(work: Path, argv: list[str]) -> int:
    """Run this script again with lrpc (compiler/, runtime/) as committed at HEAD first on PYTHONPATH."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    snap = work / f"lrpc-{commit}"
    if not (snap / "site").exists():
        (snap / "src").mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "archive", "HEAD", "compiler", "runtime"], cwd=ROOT, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(snap / "src")], input=archive, check=True)
        (snap / "site").mkdir()
        (snap / "site" / "lrpc").symlink_to(snap / "src" / "compiler")
        (snap / "site" / "lrpc_runtime").symlink_to(snap / "src" / "runtime")
    env = dict(
        os.environ,
        KERAS_VERIFY_PINNED=commit,
        PYTHONPATH=os.pathsep.join([str(snap / "site"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    print(f"lrpc pinned at {commit} ({snap})", flush=True)
    return subprocess.run([sys.executable, __file__, *argv], env=env, check=False).returncode


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage", choices=STAGES)
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
    if a.stage in ("all", "build", "cells", "verdicts", "gxi", "flips", "savedmodel"):  # builds only what is missing
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
            print(
                f"{key} {variant} {rule}: {row.get('source', {}).get('verdict', row.get('compile_error'))} "
                f"({row.get('seconds', row['compile_s'])} s)",
                flush=True,
            )
    if a.stage == "verdicts":
        for key, variant, rule in plan:
            if variant == "bnreset" and ("verdict", key, variant, rule) not in have:
                row = stage_verdict(a.work, key, rule)
                record(a.work, row)
                print(
                    f"verdict {key} {rule}: {row.get('source', {}).get('verdict', row.get('compile_error'))}",
                    flush=True,
                )
    if a.stage in ("all", "probe"):
        for r in results(a.work):
            if (
                r["stage"] == "cells"
                and "own_images" in r
                and max(r["own_images"]["errors"]) > 1e-3
                and (r["model"], r["variant"], r["rule"]) in set(plan)
                and ("probe", r["model"], r["variant"], r["rule"]) not in have
            ):
                record(a.work, stage_probe(a.work, r))
                print(f"probe {r['model']} {r['variant']} {r['rule']} done", flush=True)
    if a.stage in ("all", "probe-random"):  # cells that pass on the images and fail on verify's own inputs
        for r in results(a.work):
            if (
                r["stage"] == "cells"
                and "own_images" in r
                and max(r["own_images"]["errors"]) <= 1e-3
                and r["own_random"]["float64_status"] == "fail"
                and (r["model"], r["variant"], r["rule"]) in set(plan)
                and ("probe-random", r["model"], r["variant"], r["rule"]) not in have
            ):
                record(a.work, stage_probe(a.work, r, inputs="random"))
                print(f"probe-random {r['model']} {r['variant']} {r['rule']} done", flush=True)
    if a.stage in ("all", "gxi"):
        for key, variant in sorted({(k, v) for k, v, _ in plan if k in RELU_NETS and v != "nobn"}):
            if ("gxi", key, variant, "epsilon:eps=1e-12") not in have:
                record(a.work, stage_gxi(a.work, key, variant))
                print(f"gxi {key} {variant} done", flush=True)
    if a.stage in ("all", "flips"):
        for key in [k for k in models if k in VARIANT_MODELS]:
            if ("flips", key, "bnfix", "epsilon:eps=1e-12") not in have:
                row = stage_flips(a.work, key)
                record(a.work, row)
                print(f"flips {key}: {row['flips']} of {row['layers']} ReLU layers", flush=True)
    if a.stage in ("all", "large") and ("large", "densenet121", "bnreset", "224x224") not in have:
        record(a.work, stage_large(a.work))
        print("large densenet121 224x224 done", flush=True)
    if a.stage in ("all", "savedmodel"):
        for key in models:
            for rule in a.rule or ["EpsilonPlusFlat", "epsilon"]:
                if ("savedmodel", key, "bnreset", rule) not in have:
                    record(a.work, stage_savedmodel(a.work, key, rule))
                    print(f"savedmodel {key} {rule} done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
