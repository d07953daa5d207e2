"""`lrpc.compile`: load → prepare → select → lower → emit, as one function.

explained = lrpc.compile("model.onnx", rule="alpha1beta0", output="explained.onnx")
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import onnx
import onnx.version_converter
import onnx_ir as ir

from lrpc_runtime.metadata import KEY_RELEVANCE
from lrpc_runtime.preprocess import Preprocessing

from . import __version__
from .builder import Builder
from .emit import choose_opset, finish, relevance_output_name, save
from .errors import LrpcError
from . import frontend
from . import gradient_form
from .lower import LoweringConfig, propagate
from .metadata import checked_preprocess, file_metadata, source_sha256
from .methods import lower_method, parse_method
from .options import CompileOptions
from .passes import prepare
from .rules.assign import RuleMap, build_rule_map, has_attention
from .rules.lrp import CONVENTIONS, Rule
from .targets import (
    MASK_INPUT_NAME,
    TARGET_INPUT_NAME,
    Target,
    explained_value,
    parse_target,
    resolve_explain,
    sequence_position,
    start_signals,
    unit_count,
)
from .text import (
    PER_FEATURE_SUFFIX,
    describe as describe_token,
    detached,
    no_source_error,
    token_inputs,
    token_relevance,
)


@dataclass
class Plan:
    """A model prepared for lowering: what is explained, and each linear layer's rule."""

    model: ir.Model
    opset: int
    explained: ir.Value  # where relevance starts
    scores: ir.Value  # whose values the start relevance takes
    target: Target
    rules: RuleMap
    assigned: dict  # linear node → Rule
    convention: str
    changes: list  # what the canonization passes did, one line each
    position: int | None = None  # the explained position of a [batch, seq, vocab] tensor (targets.py)


def plan(
    model,
    rule: str | Rule | None = None,
    *,
    composite: str | None = None,
    rule_map=(),
    rule_map_file: str | None = None,
    convention: str = "lrpc",
    target=None,
    output_name: str | None = None,
    explain: str | None = None,
    keep_output_activation: bool = False,
    opset: int | None = None,
    log=None,
    position: int | None = None,
) -> Plan:
    """Load, canonize and decide what is explained and which rule each layer gets (no lowering yet)."""
    if convention not in CONVENTIONS:
        raise LrpcError(f"unknown convention '{convention}'; known: {', '.join(CONVENTIONS)}")
    build = lambda attention: build_rule_map(rule, composite, rule_map, rule_map_file, convention, attention)
    rules = RuleMap((), rule, rule.spec) if isinstance(rule, Rule) else build(False)  # options checked early
    target = parse_target(target)
    if explain is not None and output_name is not None:
        raise LrpcError("give either --output (a model output) or --explain (an inner tensor), not both")
    m = frontend.load(model)  # ONNX, or a Keras file / SavedModel folder through tf2onnx
    if KEY_RELEVANCE in m.metadata_props:
        raise LrpcError(
            "this is an explained file (written by lrpc compile: it has lrpc.* metadata and relevance "
            "outputs); compile the model it came from instead"
        )
    opset = choose_opset(opset, m.opset_imports[""])
    m = _convert_opset(m, opset)
    changes = []
    prepare(m, log=lambda line: (changes.append(line), log and log(line)))
    graph = m.graph
    if not isinstance(rule, Rule) and has_attention(graph):
        rules = build(True)
    if explain is not None:
        explained, fixed = resolve_explain(graph, explain)
        if fixed is not None and target.mode != "max":
            raise LrpcError(f"--explain {explain} fixes the unit already; drop --target {target.spec}")
        scores, target = explained, fixed or target
    else:
        explained, scores = explained_value(graph, output_name, keep_output_activation)
    for name, mode in ((TARGET_INPUT_NAME, "input"), (MASK_INPUT_NAME, "mask")):
        if target.mode == mode and any(v.name == name for v in graph.inputs):
            raise LrpcError(f"the model already has an input named '{name}'; --target {mode} adds one")
    if explained.dtype is None or not explained.dtype.is_floating_point():
        raise LrpcError(f"the explained tensor '{explained.name}' is {explained.dtype}, not a float tensor")
    position = sequence_position(scores, position, target)
    unit_count(scores, target, position)  # checks the shape early
    return Plan(m, opset, explained, scores, target, rules, rules.assign(graph), convention, changes, position)


def compile(
    model,
    rule: str | Rule | None = None,
    *,
    composite: str | None = None,
    rule_map=(),
    rule_map_file: str | None = None,
    convention: str = "lrpc",
    target=None,
    output_name: str | None = None,
    explain: str | None = None,
    keep_output_activation: bool = False,
    opset: int | None = None,
    output: str | os.PathLike | None = None,
    log=None,
    method: str | None = None,
    preprocess: str | Preprocessing | None = None,
    per_feature: bool = False,
    position: int | None = None,
    overwrite: bool = False,
) -> onnx.ModelProto:
    """Compile `model` (path, bytes, ModelProto or ir.Model; a path may name a Keras `.keras`/`.h5` file or
    a SavedModel folder, converted through tf2onnx: `pip install "lrpc[keras]"`) into an explained ONNX model.

    rule:   one LRP rule for every linear layer, e.g. "epsilon:eps=1e-6", "alphabeta:alpha=2,beta=1",
            "zbox:low=-1,high=1". With neither rule nor composite: the EpsilonPlusFlat composite.
    composite: a named composite, e.g. "EpsilonPlusFlat", "EpsilonGammaBox:low=-3,high=3", "A".
    rule_map: ["PATTERN=RULE", ...] per-layer rules, first match wins (patterns: first, last, conv,
            dense, pool, an op type, or a glob on the layer name); rule_map_file: the same in TOML.
    convention: "lrpc" (default), "zennit" (start relevance 1), "innvestigate" (ε = 1e-7, its α-β
            bias form; guided backprop and deconvnet start at the score's value) or "lxt" (ε = 1e-12,
            constant addends absorb their share); see the README.
    target: which units of the explained tensor: None or "max" (each sample's largest), a unit index
            (3, or "0,4,4" for a multi-index), "input" (an int64 graph input `target` [batch] chooses
            per call), "all" (every unit, e.g. a whole reconstruction), or "mask" (a float graph input
            `mask` of the tensor's shape weights the units per call).
    output_name: which model output is explained (default: the first).
    explain: an inner tensor to explain instead of an output: a tensor name, node name or Keras layer
            name, optionally with ":INDEX" to fix the unit (e.g. "latent:3").
    keep_output_activation: explain the output Softmax/Sigmoid's values (probabilities) rather than
            the logits; the selected probability starts at its logit.
    opset:  the emitted opset (default: 17, or the model's own when newer).
    output: if given, the explained model is also written there (atomically). An existing file there is
            replaced only when it is an explained file (an earlier output), never the source model or
            another file unless `overwrite` (as `lrpc compile --overwrite`).
    per_feature: for a token-id input (explained at its embedding lookups, lrpc/text.py), also return the
            [batch, seq, hidden] map at the embedding, as output `<relevance name>_per_feature`, beside the
            per-token [batch, seq] one.
    position: for a [batch, seq, vocab] tensor (a language-model head), the position whose logits are
            explained (negative counts from the end); default -1 (the last) where seq is dynamic. The
            target then picks the token there: max (the most likely), a token id, or input.
    log:    called with a line of text for each change a pass made.
    method: a gradient-family method instead of LRP (None or "lrp": LRP), e.g. "gradient",
            "inputxgradient", "guidedbackprop", "deconvnet", "integratedgradients:steps=32,baseline=0",
            "smoothgrad:samples=16,noise=0.1,seed=0" (see lrpc/methods/spec.py); not with rule options.
    preprocess: how `lrpc explain` turns images into inputs, stored in the file (`lrpc.preprocess`),
            e.g. "resize=224,224;mean=0.485,0.456,0.406;std=0.229,0.224,0.225" (see
            lrpc_runtime.preprocess), or a lrpc_runtime.Preprocessing.

    The file also records lrpc's version, the rule, target and convention, the source model's
    SHA-256 and the options given (see lrpc/metadata.py); the same model and options give the same
    bytes.

    >>> explained = compile("models/digits_cnn.onnx", composite="EpsilonPlusFlat")   # doctest: +SKIP
    >>> lrpc.compile("models/digits_cnn.onnx", composite="EpsilonPlus", preprocess="scale=1/255",
    ...              output="digits_explained.onnx")                                  # doctest: +SKIP
    """
    method = checked_method(method, rule, composite, rule_map, rule_map_file)
    options = CompileOptions(
        rule=rule,
        composite=composite,
        rule_map=tuple(rule_map or ()),
        rule_map_file=rule_map_file,
        convention=convention,
        target=target,
        output_name=output_name,
        explain=explain,
        keep_output_activation=keep_output_activation,
        opset=opset,
        method=None if method is None else method.spec,
        preprocess=preprocess,
        per_feature=per_feature,
        position=position,
    )
    if output is not None:
        from .outputs import check_output  # (outputs → describe → api)

        check_output(model, os.fspath(output), overwrite)
    p = plan(model, **options.plan_options(), log=log)
    graph = p.model.graph
    b = Builder(graph, p.explained.dtype)
    b.scope = "lrp/start"
    model_inputs = list(graph.inputs)  # before start_signals adds `target` or `mask`
    scaled = starts_at_value(convention, method)
    r0, seed = start_signals(b, p.scores, p.target, graph, scaled=scaled, position=p.position)
    float_inputs = [v for v in model_inputs if v.dtype is not None and v.dtype.is_floating_point()]
    tokens, passing = token_inputs(graph, skip=tuple(v.name for v in graph.inputs if v not in model_inputs))
    if not float_inputs and not tokens:
        raise no_source_error(passing)
    with detached(graph, tokens, passing) as stand_ins:
        sources = float_inputs + list(stand_ins.values())
        if method is not None:
            reached = lower_method(graph, p.scores, r0, method, b, sources)
        else:
            cfg, gradient = lowering(p)
            g0 = gradient_form.seed(b, seed, p.scores, scaled) if gradient else None
            reached = propagate(graph, p.explained, r0, cfg, b, seed=g0)
        b.scope = "lrp/tokens"
        per_token = {t.ids: token_relevance(b, t, reached, stand_ins) for t in tokens}
    relevance = {
        v: reached.get(v) if v in float_inputs else per_token[v][0]
        for v in graph.inputs
        if v in float_inputs or v in per_token
    }
    described, extra = relevance_outputs(relevance, tokens, per_token, per_feature)
    metadata = file_metadata(
        version=__version__,
        rule_spec=p.rules.spec,
        target_spec=p.target.spec,
        convention=convention,
        explained=p.scores.name,
        classes=unit_count(p.scores, p.target, p.position),
        output=None if explain is not None else (output_name or graph.outputs[0].name),
        method_spec=None if method is None else method.spec,
        preprocess=checked_preprocess(preprocess, graph),
        sha256=source_sha256(model),
        options=options.record(),
        relevance_outputs=described,
        position=p.position,
    )
    proto = finish(p.model, relevance, p.opset, metadata, b, check=output is None, extra_outputs=extra)
    if output is not None:
        save(proto, output, check=True)
    return proto


def relevance_outputs(relevance: dict, tokens: list, per_token: dict, per_feature: bool) -> tuple[dict | None, list]:
    """(what each relevance output is, for lrpc.relevance_outputs — None without token inputs; the extra
    per-feature outputs as finish takes them)."""
    if not tokens:
        if per_feature:
            raise LrpcError(
                "--per-feature applies to token-id inputs (their [batch, seq, hidden] map at the "
                "embedding); this model has none: its float inputs' relevance is per feature already"
            )
        return None, []
    described, extra, names = {}, [], list(relevance)
    for x in names:
        name = relevance_output_name(names, x)
        token = next((t for t in tokens if t.ids is x), None)
        if token is None:
            described[name] = {
                "input": x.name,
                "kind": "input",
                "shape": [d if isinstance(d, int) else str(d) for d in (x.shape or [])],
            }
            continue
        feature_name = name + PER_FEATURE_SUFFIX if per_feature else None
        described.update(describe_token(token, name, feature_name))
        if per_feature:
            extra.append((feature_name, per_token[x][1], token.lookups[0].outputs[0].shape))
    return described, extra


def checked_method(method, rule=None, composite=None, rule_map=(), rule_map_file=None):
    """The parsed gradient method (None for LRP), refusing LRP rule options beside it."""
    method = parse_method(method) if method not in (None, "lrp") else None
    if method is not None and (rule is not None or composite or rule_map or rule_map_file):
        raise LrpcError(
            f"--method {method.name} computes gradients: drop --rule, --composite and --rule-map "
            "(they choose LRP rules)"
        )
    return method


def lowering(p: Plan) -> tuple[LoweringConfig, bool]:
    """The LRP rules' configuration for plan `p`, and whether the gradient form may stand in for the
    relevance form (gradient_form.py: lower.propagate then tries it first)."""
    absorb = p.convention == "lxt" or p.rules.absorb_constants
    cfg = LoweringConfig(p.rules.default, p.assigned, absorb_constants=absorb)
    return cfg, gradient_form.usable(cfg, p.explained, p.scores)


def starts_at_value(convention: str, method) -> bool:
    """Whether the start relevance is the selected score's value (else 1): LRP starts at the value except
    under Zennit's convention; gradient methods start at 1, except iNNvestigate's guided backprop and
    deconvnet, which it seeds with the score itself (its reverse analyzers' head mapping is the identity)."""
    if method is None:
        return convention != "zennit"
    return convention == "innvestigate" and method.relu != "gradient"


def _convert_opset(model: ir.Model, opset: int) -> ir.Model:
    if model.opset_imports[""] == opset:
        return model
    try:
        converted = onnx.version_converter.convert_version(ir.serde.serialize_model(model), opset)
    except Exception as e:  # the converter raises plain RuntimeError/ConvertError
        raise LrpcError(f"cannot convert the model from opset {model.opset_imports['']} to {opset}: {e}") from e
    return ir.serde.deserialize_model(converted)
