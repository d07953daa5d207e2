"""`lrpc.compile`: load → prepare → select → lower → emit, as one function.

    explained = lrpc.compile("model.onnx", rule="alpha1beta0", output="explained.onnx")
"""

from __future__ import annotations

import os

import onnx
import onnx.version_converter
import onnx_ir as ir

from . import __version__
from .builder import Builder
from .emit import choose_opset, finish, save
from .errors import LrpcError
from .frontend import onnx as onnx_frontend
from .lower import LoweringConfig, propagate
from .passes import prepare
from .rules.lrp import Rule, parse_rule
from .select import TARGET_INPUT_NAME, explained_value, parse_target, start_relevance

DEFAULT_RULE = "epsilon"


def compile(model, rule: str | Rule = DEFAULT_RULE, *, target=None, keep_output_activation: bool = False,
            opset: int | None = None, output: str | os.PathLike | None = None, log=None) -> onnx.ModelProto:
    """Compile `model` (path, bytes, ModelProto or ir.Model) into an explained ONNX model.

    rule:   an LRP rule spec, e.g. "epsilon:eps=1e-6", "alphabeta:alpha=2,beta=1", "zbox:low=-1,high=1".
    target: None or "max" (each sample's largest logit), a class index, or "input" (an int64 graph
            input `target` [batch] chooses per call).
    keep_output_activation: explain the output Softmax/Sigmoid's values (probabilities) rather than
            the logits; the selected probability starts at its logit.
    opset:  the emitted opset (default: 17, or the model's own when newer).
    output: if given, the explained model is also written there (atomically).
    log:    called with a line of text for each step that changed the model.

    >>> explained = compile("models/digits_cnn.onnx", rule="epsilon")   # doctest: +SKIP
    """
    rule = parse_rule(rule) if isinstance(rule, str) else rule
    target = parse_target(target)
    m = onnx_frontend.load(model)
    opset = choose_opset(opset, m.opset_imports[""])
    m = _convert_opset(m, opset)
    prepare(m, log=log)
    graph = m.graph
    if any(v.name == TARGET_INPUT_NAME for v in graph.inputs) and target.mode == "input":
        raise LrpcError(f"the model already has an input named '{TARGET_INPUT_NAME}'; --target input adds one")
    explained, scores = explained_value(graph, keep_output_activation)
    if explained.dtype is None or not explained.dtype.is_floating_point():
        raise LrpcError(f"the explained output '{explained.name}' is {explained.dtype}, not a float tensor")
    b = Builder(graph, explained.dtype)
    b.scope = "lrp/start"
    r0 = start_relevance(b, scores, target, graph)
    float_inputs = [v for v in graph.inputs if v.name != TARGET_INPUT_NAME and v.dtype is not None
                    and v.dtype.is_floating_point()]
    if not float_inputs:
        raise LrpcError("the model has no float input to explain")
    reached = propagate(graph, explained, r0, LoweringConfig(rule), b)
    metadata = {"lrpc.version": __version__, "lrpc.rule": rule.spec, "lrpc.target": target.spec,
                "lrpc.explained": scores.name, "lrpc.classes": str(scores.shape[1])}
    proto = finish(m, {v: reached.get(v) for v in float_inputs}, opset, metadata, b)
    if output is not None:
        save(proto, output)
    return proto


def _convert_opset(model: ir.Model, opset: int) -> ir.Model:
    if model.opset_imports[""] == opset:
        return model
    try:
        converted = onnx.version_converter.convert_version(ir.serde.serialize_model(model), opset)
    except Exception as e:  # the converter raises plain RuntimeError/ConvertError
        raise LrpcError(f"cannot convert the model from opset {model.opset_imports['']} to {opset}: {e}") from e
    return ir.serde.deserialize_model(converted)
