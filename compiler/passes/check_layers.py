"""What neither onnx's checker nor its shape inference checks and onnxruntime rejects at run time, refused
before canonization with the node named:

- Conv, ConvTranspose and the pools: auto_pad ∈ {NOTSET, SAME_UPPER, SAME_LOWER, VALID}; strides,
  dilations ≥ 1; a weight of the input's rank whose spatial dims are kernel_shape (where given); a Conv's
  group ≥ 1 with C_in = group·W.shape[1] (C_in static) and group | C_out; ConvTranspose likewise
  C_in = W.shape[0], group | C_in; each window within its padded input, in + p₀ + p₁ ≥ (k − 1)·d + 1;
- Gemm's transA, transB ∈ {0, 1} (the rules transpose by 1 − transB);
- a Gather's constant indices within [−n, n) of its static axis;
- no control flow (If, Loop, Scan: their bodies read outer values no reverse walk sees, so relevance
  would silently miss them);
- no QOperator node (quantized.py).
"""

from __future__ import annotations

import onnx_ir as ir

from ..errors import LrpcError, node_label
from .quantized import check_not_qoperator


AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")
WINDOWED = ("Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool")


def _channels(value: ir.Value) -> int | None:
    shape = value.shape
    return shape[1] if shape is not None and len(shape) > 1 and isinstance(shape[1], int) else None


def _check_weight(node: ir.Node) -> None:
    """W of rank x's rank, its spatial dims = kernel_shape where that is given; group as in the docstring."""
    group = node.attributes.get_int("group", 1)
    weight = node.inputs[1] if len(node.inputs) > 1 else None
    w_shape = weight.shape if weight is not None and weight.shape is not None else None
    x_shape = node.inputs[0].shape
    if w_shape is not None and x_shape is not None and len(w_shape) != len(x_shape):
        raise LrpcError(
            f"{node_label(node)}: its weight has shape {list(w_shape)}, of rank {len(w_shape)}, for an "
            f"input of rank {len(x_shape)}; the model cannot run"
        )
    kernel = list(node.attributes.get_ints("kernel_shape", []))
    if w_shape is not None and kernel and kernel != list(w_shape)[2:]:
        raise LrpcError(f"{node_label(node)}: kernel_shape={kernel}, but its weight has shape {list(w_shape)}")
    if group < 1:
        raise LrpcError(f"{node_label(node)}: group={group}; ONNX needs group ≥ 1")
    if w_shape is None or len(w_shape) < 2 or not all(isinstance(d, int) for d in w_shape[:2]):
        return
    c_in = _channels(node.inputs[0])
    if node.op_type == "Conv":
        expected, c_out = w_shape[1] * group, w_shape[0]
    else:  # ConvTranspose: W [C_in, C_out/group, k…]
        expected, c_out = w_shape[0], w_shape[1] * group
    if c_in is not None and c_in != expected:
        raise LrpcError(
            f"{node_label(node)}: its input has {c_in} channels, but its weight {list(w_shape)} with "
            f"group={group} takes {expected}; the model cannot run"
        )
    if node.op_type == "Conv" and c_out % group or node.op_type == "ConvTranspose" and expected % group:
        raise LrpcError(f"{node_label(node)}: group={group} does not divide its channels (weight {list(w_shape)})")


def _check_window_fits(node: ir.Node) -> None:
    """Each window fits in the padded input: in + p_begin + p_end ≥ (k − 1)·d + 1 on every static axis
    (auto_pad NOTSET or VALID; SAME pads to ceil(in / s) ≥ 1 outputs). onnx's shape inference gives an
    output of size ≥ 1 regardless; onnxruntime fails with "Invalid input shape"."""
    x = node.inputs[0]
    auto_pad = node.attributes.get_string("auto_pad", "NOTSET")
    if auto_pad.startswith("SAME") or x.shape is None or node.op_type == "ConvTranspose":
        return
    kernel = list(node.attributes.get_ints("kernel_shape", []))
    if not kernel and len(node.inputs) > 1 and node.inputs[1] is not None and node.inputs[1].shape is not None:
        kernel = list(node.inputs[1].shape)[2:]
    n, spatial = len(kernel), list(x.shape)[2:]
    if not kernel or len(spatial) != n or not all(isinstance(k, int) for k in kernel):
        return
    dilations = list(node.attributes.get_ints("dilations", [1] * n))
    pads = [0] * 2 * n if auto_pad == "VALID" else list(node.attributes.get_ints("pads", [0] * 2 * n))
    for i, size in enumerate(spatial):
        reach = (kernel[i] - 1) * dilations[i] + 1
        if isinstance(size, int) and len(pads) == 2 * n and size + pads[i] + pads[n + i] < reach:
            raise LrpcError(
                f"{node_label(node)}: its window (kernel {kernel}, dilations {dilations}) is larger than "
                f"its input {spatial} with pads {pads}; the model cannot run"
            )


def _check_gemm(node: ir.Node) -> None:
    for flag in ("transA", "transB"):
        value = node.attributes.get_int(flag, 0)
        if value not in (0, 1):
            raise LrpcError(f"{node_label(node)}: {flag}={value}; ONNX takes 0 or 1")


def _check_no_subgraph(node: ir.Node) -> None:
    """If, Loop and Scan bodies read values of the enclosing graph that are not inputs of the node, so no
    reverse walk sees what they depend on; an explained graph would give those values no relevance."""
    if any(a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS) for a in node.attributes.values()):
        raise LrpcError(
            f"{node_label(node)}: control flow (If, Loop, Scan) has no relevance rule: its body reads "
            "values the walk back cannot follow; export the model with the branch taken fixed (tracing "
            "exporters such as torch.onnx.export(..., dynamo=False) record one branch) "
            "or the loop unrolled"
        )


def _check_gather_indices(node: ir.Node) -> None:
    """Constant indices within [-n, n) of a static data axis; onnxruntime fails at run time otherwise."""
    data, indices = node.inputs[0], node.inputs[1]
    if indices is None or indices.const_value is None or data.shape is None:
        return
    axis = node.attributes.get_int("axis", 0)
    if not -len(data.shape) <= axis < len(data.shape):
        raise LrpcError(f"{node_label(node)}: axis={axis} for data of rank {len(data.shape)}; the model cannot run")
    n, values = data.shape[axis], indices.const_value.numpy()
    if isinstance(n, int) and values.size and (values.min() < -n or values.max() >= n):
        bad = values[(values < -n) | (values >= n)].ravel()[0]
        raise LrpcError(
            f"{node_label(node)}: index {bad} on axis {axis} of size {n} (valid: {-n}…{n - 1}); the model cannot run"
        )


class CheckLayersPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        for node in model.graph:
            check_not_qoperator(node)
            if node.domain not in ("", "ai.onnx"):
                continue
            _check_no_subgraph(node)
            if node.op_type == "Gemm":
                _check_gemm(node)
            if node.op_type == "Gather":
                _check_gather_indices(node)
            if node.op_type not in WINDOWED:
                continue
            auto_pad = node.attributes.get_string("auto_pad", "NOTSET")
            if auto_pad not in AUTO_PADS:
                raise LrpcError(f"{node_label(node)}: auto_pad='{auto_pad}'; ONNX knows {', '.join(AUTO_PADS)}")
            for name in ("strides", "dilations"):
                values = list(node.attributes.get_ints(name, []))
                if any(v < 1 for v in values):
                    raise LrpcError(f"{node_label(node)}: {name}={values}; ONNX needs each ≥ 1")
            if node.op_type in ("Conv", "ConvTranspose"):
                _check_weight(node)
            _check_window_fits(node)
        return ir.passes.PassResult(model, False)
