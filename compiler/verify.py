"""`lrpc verify`: can this explained file be trusted? Three checks on random (or given) inputs.

1. finite      no NaN or Inf in any output or relevance map (onnxruntime, float32, as deployed).
2. float64     the float32 results agree with a float64 reference within `tolerance`, per sample:
               max|R₃₂ − R₆₄| / max|R₆₄| (and the same for each model output). The reference is
               the file's own graph in double precision (lrpc/float64.py) — this catches numerical
               trouble, not a wrong rule — or, with `source`, a fresh compile of the source model
               with the options the file records (`lrpc.options`), after checking the source's
               SHA-256 against `lrpc.source_sha256`: this catches any edit of the file.
3. conservation  Σ relevance / start relevance S₀ per sample, S₀ = Σ_u w_u·y_u (w: the target's
               selection, y: the explained tensor `lrpc.explained`; w alone under Zennit's
               convention). It must be 1 (within `conservation_tolerance`) where LRP conserves
               exactly: the `zero` or `epsilon` (ε ≤ 1e-4) rule on every layer, and a forward graph
               with no bias and no other constant added. Elsewhere biases and ε absorb some
               relevance and the ratio is reported, not judged; gradient methods have no ratio.

    report = lrpc.verify("explained.onnx")                    # random inputs
    report = lrpc.verify("explained.onnx", source="model.onnx", inputs=x)
    print(report.text()); assert report.passed
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from lrpc_runtime.preprocess import Preprocessing
from lrpc_runtime.text import side_input_fill

from . import __version__
from .errors import LrpcError
from .float64 import random_ops, run_double
from .metadata import source_sha256

CONSERVING_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "Relu", "MaxPool", "GlobalMaxPool", "Flatten",
                  "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Concat", "Split", "Slice", "Add",
                  "Sum", "Mul", "Div", "Shape", "Gather", "Constant", "Cast"}
MAX_CONSERVING_EPS = 1e-4


@dataclass
class Check:
    name: str
    status: str  # pass | fail | info | skipped
    detail: str


@dataclass
class VerifyReport:
    """What `verify` found: per-sample rows and one line per check; `passed` only when every check ran and
    none failed (a check that could not run is reported as not run, never as passed)."""

    header: list[str]
    rows: list[dict] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.status not in ("fail", "skipped") for c in self.checks)

    def verdict(self) -> str:
        failed = [c.name for c in self.checks if c.status == "fail"]
        not_run = [c.name for c in self.checks if c.status == "skipped"]
        if failed:
            return "FAILED: " + ", ".join(failed) + (f" (not run: {', '.join(not_run)})" if not_run else "")
        if not_run:
            return f"NOT VERIFIED: {', '.join(not_run)} could not run; the other checks passed"
        return "verified: every check passed"

    def text(self) -> str:
        lines = list(self.header)
        lines.append(f"  {'sample':>6}  {'start S₀':>11}  {'Σ relevance':>11}  {'ratio':>8}  {'vs float64':>10}  finite")
        for r in self.rows:
            cells = [_num(r["start"]), _num(r["relevance_sum"]), _num(r["ratio"], ".4f"), _num(r["error"], ".1e")]
            lines.append(f"  {r['sample']:>6}  {cells[0]:>11}  {cells[1]:>11}  {cells[2]:>8}  {cells[3]:>10}  "
                         + ("yes" if r["finite"] else "NO"))
        lines += [f"{'NOT RUN' if c.status == 'skipped' else c.status.upper():<7} {c.name}: {c.detail}"
                  for c in self.checks]
        lines.append(self.verdict())
        return "\n".join(lines)


def _num(value, fmt: str = ".5g") -> str:
    return "—" if value is None or (isinstance(value, float) and np.isnan(value)) else format(value, fmt)


def _load(model) -> tuple[onnx.ModelProto, str]:
    if isinstance(model, onnx.ModelProto):
        return model, "<model>"
    if isinstance(model, (bytes, bytearray)):
        proto, where = onnx.ModelProto(), "<bytes>"
        try:
            proto.ParseFromString(bytes(model))
        except Exception as e:
            raise LrpcError(f"{where}: not an ONNX model ({e})") from None
        return proto, where
    path = os.fspath(model)
    if not os.path.isfile(path):
        raise LrpcError(f"{path}: no such file")
    try:
        return onnx.load(path), path
    except Exception as e:
        raise LrpcError(f"{path}: not an ONNX model ({type(e).__name__}: {e})") from None


def _metadata(proto: onnx.ModelProto, where: str) -> dict[str, str]:
    meta = {p.key: p.value for p in proto.metadata_props if p.key.startswith("lrpc.")}
    missing = [k for k in ("lrpc.relevance", "lrpc.target", "lrpc.explained") if k not in meta]
    if missing:
        raise LrpcError(f"{where} is not an explained file (no {', '.join(missing)} in its metadata); "
                        "verify the file `lrpc compile` writes")
    return meta


FREE_AXIS = 8  # the length random inputs take along a free axis besides the batch (a sequence)


def _shape(value: onnx.ValueInfoProto, batch: int, given: dict) -> tuple[int, ...]:
    """The input's shape with the batch `batch` and any other free axis FREE_AXIS long."""
    dims = value.type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    if shape and shape[0] is None:
        shape[0] = batch
    return tuple(FREE_AXIS if d is None else d for d in shape)


def _token_vocab(meta) -> dict[str, int]:
    """Token-id input → its vocabulary size (lrpc.relevance_outputs of a text model)."""
    entries = json.loads(meta.get("lrpc.relevance_outputs", "{}")).values()
    return {e["input"]: int(e["vocab"]) for e in entries if e.get("kind") == "token"}


def _pixel_like(shape: tuple[int, ...], preprocess: str | None, rng: np.random.Generator) -> np.ndarray:
    """Uniform [0, 1) pixels, normalized by the file's preprocessing spec when it has one."""
    u = rng.random(shape)
    if preprocess and len(shape) == 4:
        spec = json.loads(preprocess)
        axis = 3 if spec.get("layout") == "NHWC" or (spec.get("layout") is None and shape[3] in (1, 3)
                                                     and shape[1] not in (1, 3)) else 1
        view = [1, 1, 1, 1]
        view[axis] = -1
        mean = np.asarray(spec.get("mean", [0.0]), np.float64).reshape(view)
        std = np.asarray(spec.get("std", [1.0]), np.float64).reshape(view)
        u = (u * 255.0 * spec.get("scale", 1 / 255) - mean) / std
    return u.astype(np.float32)


def _feeds(proto, meta, inputs, samples: int, rng) -> tuple[dict[str, np.ndarray], str]:
    """Every graph input: the given arrays, else random ones; random targets and masks."""
    explained = list(json.loads(meta["lrpc.relevance"]))
    if inputs is not None and not isinstance(inputs, dict):
        inputs = {explained[0]: inputs} if len(explained) == 1 else None
        if inputs is None:
            raise LrpcError(f"the model has inputs {explained}: give a dict of arrays")
    given = {k: np.asarray(v) for k, v in (inputs or {}).items()}
    batch = next(iter(given.values())).shape[0] if given else samples
    feeds, vocab = {}, _token_vocab(meta)
    for value in proto.graph.input:
        name = value.name
        if name in given:
            feeds[name] = given[name].astype(np.float32) if given[name].dtype.kind in "fiu" else given[name]
        elif name == "target":
            feeds[name] = rng.integers(0, int(meta.get("lrpc.classes", "1")), batch).astype(np.int64)
        elif value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
            feeds[name] = _pixel_like(_shape(value, batch, given), meta.get("lrpc.preprocess"), rng) \
                if name in explained else rng.random(_shape(value, batch, given)).astype(np.float32)
        elif name in vocab:  # token ids
            feeds[name] = rng.integers(0, vocab[name], _shape(value, batch, given)).astype(_int_type(value))
        elif value.type.tensor_type.elem_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32):
            feeds[name] = np.full(_shape(value, batch, given), side_input_fill(name), _int_type(value))
        else:
            raise LrpcError(f"input '{name}' is neither float nor integer: give it (--inputs)")
    free = any(not d.HasField("dim_value") for v in proto.graph.input for d in v.type.tensor_type.shape.dim[1:])
    what = "the inputs given" if given else \
        f"{batch} random sample{'s' * (batch != 1)}, " + ("random token ids" if vocab else "uniform [0, 1) pixels") \
        + (f", free axes {FREE_AXIS} long" if free else "") + " (seed {seed})"
    return feeds, what


def _int_type(value: onnx.ValueInfoProto):
    return np.int32 if value.type.tensor_type.elem_type == onnx.TensorProto.INT32 else np.int64


def _run_float32(proto: onnx.ModelProto, feeds: dict, extra: str) -> dict[str, np.ndarray]:
    """onnxruntime on the file as it is, plus the explained tensor as an extra output."""
    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    if extra not in {o.name for o in probe.graph.output}:
        elem = next((v.type.tensor_type.elem_type for v in probe.graph.value_info if v.name == extra),
                    onnx.TensorProto.FLOAT)
        probe.graph.output.append(onnx.helper.make_tensor_value_info(extra, elem, None))
    try:
        session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(None, feeds)))
    except Exception as e:  # onnxruntime's own errors: a broken graph, wrong inputs
        raise LrpcError(f"onnxruntime cannot run the file: {str(e).splitlines()[0][:300]}") from None


def _reference(proto, meta, source) -> tuple[onnx.ModelProto | None, list[Check], str]:
    """The model the float64 run uses: the file itself, or a fresh compile of `source`."""
    if source is None:
        return proto, [], "this file's graph in float64 (onnx reference evaluator)"
    from .api import compile as compile_model

    recorded, actual = meta.get("lrpc.source_sha256"), source_sha256(source)
    if recorded != actual:
        return None, [Check("source", "fail", f"the file was compiled from SHA-256 {recorded or '(not recorded)'}, "
                                              f"{os.fspath(source) if not isinstance(source, bytes) else 'source'} "
                                              f"is {actual}")], "—"
    if "lrpc.options" not in meta:
        raise LrpcError("the file records no lrpc.options (compiled by an older lrpc): cannot recompile its source")
    options = json.loads(meta["lrpc.options"])
    options["preprocess"] = meta.get("lrpc.preprocess") and Preprocessing.from_json(meta["lrpc.preprocess"])
    toml = options.pop("rule_map_toml", None)
    with tempfile.TemporaryDirectory() as folder:
        if toml is not None:
            options["rule_map_file"] = os.path.join(folder, "rules.toml")
            with open(options["rule_map_file"], "w", encoding="utf-8") as f:
                f.write(toml)
        fresh = compile_model(source, **options)
    same = fresh.SerializeToString(deterministic=True) == proto.SerializeToString(deterministic=True)
    version = meta.get("lrpc.version")
    note = "byte-identical to the file" if same else f"differs from the file (written by lrpc {version}, " \
                                                     f"this is lrpc {__version__})"
    checks = [Check("source", "pass", f"SHA-256 matches; a fresh compile {note}")]
    return fresh, checks, "a fresh compile of the source in float64 (onnx reference evaluator)"


def _selection(scores: np.ndarray, mode: str, feeds: dict) -> np.ndarray:
    """The target's weights w over each sample's units, [batch, units] (select.py's, in numpy)."""
    flat = scores.reshape(len(scores), -1)
    if mode == "all":
        return np.ones_like(flat)
    if mode == "mask":
        return feeds["mask"].reshape(len(scores), -1).astype(np.float64)
    if mode == "max":
        index = flat.argmax(1)
    elif mode == "input":
        index = feeds["target"]
    else:
        parts = tuple(int(k) for k in mode[6:].split(","))
        index = np.full(len(flat), parts[0] if len(parts) == 1 else np.ravel_multi_index(parts, scores.shape[1:]))
    return (np.arange(flat.shape[1])[None, :] == np.asarray(index)[:, None]).astype(np.float64)


def _eps_of(rule: str) -> float | None:
    """ε of a single `zero`/`epsilon` rule spec (0 for zero), None for anything else."""
    if rule == "zero":
        return 0.0
    name, _, params = rule.partition(":")
    if name != "epsilon" or ";" in rule:
        return None
    values = dict(p.split("=", 1) for p in params.split(",") if "=" in p)
    return float(values.get("eps", 1e-6))


def _upstream(graph: onnx.GraphProto, name: str) -> list[onnx.NodeProto]:
    producer = {out: node for node in graph.node for out in node.output}
    seen, todo, found = set(), [name], []
    while todo:
        node = producer.get(todo.pop())
        if node is not None and id(node) not in seen:
            seen.add(id(node))
            found.append(node)
            todo += [i for i in node.input if i]
    return found


def conserving(proto: onnx.ModelProto, meta: dict[str, str]) -> tuple[bool, str]:
    """Whether LRP conserves exactly on this file, and why (not)."""
    if "lrpc.method" in meta:
        return False, "a gradient method"
    eps = _eps_of(meta.get("lrpc.rule", ""))
    if eps is None or eps > MAX_CONSERVING_EPS:
        return False, f"rule {meta.get('lrpc.rule')} (only zero and epsilon with ε ≤ 1e-4 conserve exactly)"
    constants = {t.name: t for t in proto.graph.initializer}
    for node in _upstream(proto.graph, meta["lrpc.explained"]):
        if node.op_type not in CONSERVING_OPS:
            return False, f"the forward graph has a {node.op_type}"
        biases = node.input[2:3] if node.op_type in ("Conv", "ConvTranspose", "Gemm") else \
            [i for i in node.input if i in constants] if node.op_type in ("Add", "Sum") else []
        if any(b in constants and np.any(numpy_helper.to_array(constants[b])) for b in biases):
            return False, f"{node.op_type} '{node.name}' adds a bias"
    return True, "zero/epsilon rule on a bias-free network"


def _per_sample(a: np.ndarray) -> np.ndarray:
    return a.reshape(len(a), -1).astype(np.float64)


def _relative_error(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    diff = np.abs(_per_sample(low) - _per_sample(high)).max(1)
    return diff / np.maximum(np.abs(_per_sample(high)).max(1), np.finfo(np.float64).tiny)


def verify(model: str | os.PathLike | bytes | onnx.ModelProto, *, source: str | os.PathLike | bytes | None = None,
           inputs: np.ndarray | dict[str, np.ndarray] | None = None, samples: int = 4, seed: int = 0,
           tolerance: float = 1e-3, conservation_tolerance: float = 1e-3, name: str | None = None) -> VerifyReport:
    """Check an explained file (path, bytes or ModelProto); see the module docstring for the checks.

    inputs: an array for the explained input (or a dict by input name); else `samples` random ones.
    source: the source model (path or bytes): the float64 reference becomes a fresh compile of it.
    name:   what the report calls the file (default: its path).

    >>> report = verify("digits_explained.onnx", source="models/digits_cnn.onnx", samples=8)  # doctest: +SKIP
    >>> report.passed, [check.status for check in report.checks]   # doctest: +SKIP
    (True, ['pass', 'pass', 'pass', 'info'])
    >>> report.rows[0]                                             # doctest: +SKIP
    {'sample': 0, 'start': 11.48..., 'relevance_sum': 10.15..., 'ratio': 0.884..., 'error': 4.2e-07, 'finite': True}
    """
    if samples < 1:
        raise LrpcError(f"--samples must be at least 1, not {samples}")
    proto, where = _load(model)
    where = name or where
    meta = _metadata(proto, where)
    rng = np.random.default_rng(seed)
    feeds, what = _feeds(proto, meta, inputs, samples, rng)
    relevance_names = list(json.loads(meta["lrpc.relevance"]).values())
    output_names = [o.name for o in proto.graph.output if o.name not in relevance_names]
    got = _run_float32(proto, feeds, meta["lrpc.explained"])
    relevance = np.concatenate([_per_sample(got[n]) for n in relevance_names], axis=1)
    header = [f"verify {where}: {meta.get('lrpc.rule')}, target {meta['lrpc.target']}, convention "
              f"{meta.get('lrpc.convention', 'lrpc')} (lrpc {meta.get('lrpc.version', '?')})",
              f"inputs: {what.format(seed=seed)}"]
    finite = np.array([all(np.isfinite(_per_sample(got[n])[i]).all() for n in output_names + relevance_names)
                       for i in range(len(relevance))])
    checks = [Check("finite", "pass" if finite.all() else "fail",
                    "no NaN or Inf in the outputs and relevance" if finite.all() else
                    f"NaN or Inf in sample(s) {np.flatnonzero(~finite).tolist()}")]
    errors, float64_checks = _compare_float64(proto, meta, source, feeds, got, output_names, relevance_names,
                                              tolerance, header)
    checks += float64_checks
    ratios, start = _conservation(proto, meta, feeds, got[meta["lrpc.explained"]], relevance,
                                  conservation_tolerance, checks)
    rows = [{"sample": i, "start": None if start is None else float(start[i]),
             "relevance_sum": float(relevance[i].sum()), "ratio": None if ratios is None else float(ratios[i]),
             "error": None if errors is None else float(errors[i]), "finite": bool(finite[i])}
            for i in range(len(relevance))]
    return VerifyReport(header, rows, checks)


def _compare_float64(proto, meta, source, feeds, got, output_names, relevance_names, tolerance, header):
    reference, checks, described = _reference(proto, meta, source)
    header.append(f"float64 reference: {described}")
    if reference is None:
        return None, checks
    randomness = random_ops(reference)
    if randomness:
        checks.append(Check("float64", "skipped", f"the graph draws random numbers ({', '.join(randomness)}), "
                                                  "which no two runtimes draw alike"))
        return None, checks
    try:
        want = run_double(reference, feeds, output_names + relevance_names)
    except Exception as e:  # an op the reference evaluator lacks
        checks.append(Check("float64", "skipped", f"the reference evaluator cannot run the graph: "
                                                  f"{str(e).splitlines()[0][:200]}"))
        return None, checks
    errors = np.max([_relative_error(got[n], want[n]) for n in relevance_names], axis=0)
    forward = max(float(_relative_error(got[n], want[n]).max()) for n in output_names) if output_names else 0.0
    worst = float(np.nan_to_num(errors, nan=np.inf).max())
    ok = worst <= tolerance and forward <= tolerance
    checks.append(Check("float64", "pass" if ok else "fail",
                        f"relevance within {worst:.1e} of float64, outputs within {forward:.1e} "
                        f"(max |difference| / max |value| per sample; tolerance {tolerance:.0e})"))
    return errors, checks


def _conservation(proto, meta, feeds, scores, relevance, tolerance, checks):
    strict, why = conserving(proto, meta)
    if "lrpc.method" in meta:
        checks.append(Check("conservation", "info", "not applicable: gradient methods do not conserve relevance"))
        return None, None
    weights = _selection(scores.astype(np.float64), meta["lrpc.target"], feeds)
    from_value = meta.get("lrpc.convention", "lrpc") != "zennit"
    start = (weights * _per_sample(scores)).sum(1) if from_value else weights.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = relevance.sum(1) / start
    finite = ratios[np.isfinite(ratios)]
    spread = f"Σ relevance / S₀ = {finite.min():.4f} … {finite.max():.4f}" if finite.size else \
        "Σ relevance / S₀ is not finite"
    if not strict:
        checks.append(Check("conservation", "info", f"{spread}; not judged: {why}"))
    else:
        bad = ~(np.abs(ratios - 1) <= tolerance)
        checks.append(Check("conservation", "fail" if bad.any() else "pass",
                            f"{spread} ({why}: must be 1 ± {tolerance:.0e})"
                            + (f"; off in sample(s) {np.flatnonzero(bad).tolist()}" if bad.any() else "")))
    return ratios, start
