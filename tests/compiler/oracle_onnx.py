"""The oracle's view of a chain-shaped ONNX model, canonized at the matrix level (no lrpc code).

Walks the nodes in order and builds oracle layers (oracle.py) from the float32 weights:

- Conv, Gemm, MatMul (+ a constant Add: its bias) → Linear, by oracle's own index loops.
- BatchNormalization and per-element constant Mul/Add/Sub/Div are affine maps a ↦ s⊙a + t. One that
  follows a Linear is composed into it: W' = diag(s) W, b' = s⊙b + t. One that precedes a Linear
  (possibly through a Transpose) with no padding is composed into it: W' = W diag(s), b' = b + W t.
  Otherwise a BatchNormalization is a Linear of its own (diagonal W = diag(s), b = t) and a Mul/Add
  is a `Scale` layer that passes relevance through — the canonized network DESIGN §6 specifies.
- AveragePool → a depthwise Linear with weights 1/K over the valid taps, then a `Scale` by K/n(o),
  n(o) the pool's divisor counted here tap by tap; GlobalAveragePool and a ReduceMean over the
  spatial axes → a depthwise Linear 1/K.
- Relu, MaxPool, Transpose, Flatten/Reshape/Squeeze/Unsqueeze → oracle's layers; an output Softmax
  is dropped (the logits are explained).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

import oracle
from oracle import Identity, Linear, Permute, Relu


@dataclass
class Scale:
    """a ↦ s⊙a + t elementwise, relevance passed through unchanged."""

    s: np.ndarray
    t: np.ndarray

    def forward(self, x):
        return self.s * x + self.t

    def relevance(self, x, R, rule):
        return R


def _attrs(node):
    values = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in values.items()}


def _affine_of(node, c, shape):
    """(s, t) per element of a sample of `shape` for `a ∘ c` (c broadcast with a leading batch axis)."""
    c = np.asarray(c, np.float64)
    c = c[0] if c.ndim == len(shape) + 1 else c
    c = np.broadcast_to(c, shape).reshape(-1)
    one, zero = np.ones_like(c), np.zeros_like(c)
    return {"Mul": (c, zero), "Div": (1 / c, zero), "Add": (one, c), "Sub": (one, -c)}[node.op_type]


def _avgpool(shape, kernel, strides, pads, include_pad, out_spatial, dilations):
    """(depthwise Linear with 1/K, Scale K/n) for an AveragePool with explicit pads (ceil extras in pads)."""
    C, *spatial = shape
    nd, K = len(kernel), int(np.prod(kernel))
    weight = np.full([C, 1, *kernel], 1.0 / K)
    conv_pads = list(pads)
    for a in range(nd):  # extend the end pads so that a floor-mode conv reaches out_spatial
        need = (
            (out_spatial[a] - 1) * strides[a] + (kernel[a] - 1) * dilations[a] + 1 - spatial[a] - pads[a] - pads[nd + a]
        )
        conv_pads[nd + a] += max(need, 0)
    L = oracle.conv_layer(weight, None, shape, strides, conv_pads, dilations, group=C)
    divisor = np.zeros(L.out_shape)
    for c, o in itertools.product(range(C), itertools.product(*map(range, out_spatial))):
        n = 0
        for kk in itertools.product(*map(range, kernel)):
            i = [o[a] * strides[a] - pads[a] + kk[a] * dilations[a] for a in range(nd)]
            low = [-pads[a] if include_pad else 0 for a in range(nd)]
            high = [spatial[a] + pads[nd + a] if include_pad else spatial[a] for a in range(nd)]
            n += all(low[a] <= i[a] < high[a] for a in range(nd))
        divisor[(c, *o)] = n
    m = np.where(divisor > 0, K / np.maximum(divisor, 1), 0.0).reshape(-1)
    return L, Scale(m, np.zeros_like(m))


def _compose_after(L: Linear, s, t) -> Linear:
    return Linear(s[:, None] * L.W, s * L.b + t, L.S, L.in_shape, L.out_shape)


def _compose_before(L: Linear, s, t) -> Linear:
    return Linear(L.W * s[None, :], L.b + L.W @ t, L.S, L.in_shape, L.out_shape)


def oracle_layers(model: onnx.ModelProto, sample_shape) -> list:
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    shape, layers, pending = tuple(sample_shape), [], None  # pending: an affine map waiting for a Linear
    for node in model.graph.node:
        a = _attrs(node)
        const = [consts.get(v) for v in node.input]
        op = node.op_type
        if op == "Constant":
            consts[node.output[0]] = numpy_helper.to_array(a["value"])
            continue
        new = None
        if op == "Conv":
            new = oracle.conv_layer(
                const[1],
                const[2] if len(const) > 2 else None,
                shape,
                a.get("strides"),
                a.get("pads"),
                a.get("dilations"),
                a.get("group", 1),
                a.get("auto_pad", "NOTSET"),
            )
        elif op == "Gemm":
            new = oracle.gemm_layer(
                const[1],
                const[2] if len(const) > 2 else None,
                a.get("alpha", 1.0),
                a.get("beta", 1.0),
                a.get("transB", 0),
            )
        elif op == "MatMul":
            new = oracle.matmul_layer(const[1], None, shape[:-1])
        elif op in ("Add", "Sub", "Mul", "Div") and any(c is not None for c in const):
            s, t = _affine_of(node, next(c for c in const if c is not None), shape)
            if layers and isinstance(layers[-1], Linear) and pending is None:
                layers[-1] = _compose_after(layers[-1], s, t)
            elif pending is None:
                pending = ("scale", s, t)
            else:
                pending = (pending[0], s * pending[1], s * pending[2] + t)
            continue
        elif op == "BatchNormalization":
            g, beta, mu, var = (np.asarray(c, np.float64) for c in const[1:5])
            s = g / np.sqrt(var + a.get("epsilon", 1e-5))
            s, t = (np.repeat(v, int(np.prod(shape[1:]))) for v in (s, beta - mu * s))
            if layers and isinstance(layers[-1], Linear) and pending is None:
                layers[-1] = _compose_after(layers[-1], s, t)
            else:
                pending = ("bn", s, t)
            continue
        elif op == "AveragePool":
            out = _out_spatial(node, model)
            pads = a.get("pads", [0] * 2 * len(a["kernel_shape"]))
            L, m = _avgpool(
                shape,
                a["kernel_shape"],
                a.get("strides", [1] * len(pads)),
                pads,
                a.get("count_include_pad", 0),
                out,
                a.get("dilations", [1] * len(out)),
            )
            layers += _flush(pending, L)
            pending = None
            layers.append(m)
            shape = L.out_shape
            continue
        elif op == "GlobalAveragePool" or (op == "ReduceMean" and _spatial_mean(node, a, const, shape)):
            new = oracle.conv_layer(
                np.full([shape[0], 1, *shape[1:]], 1.0 / np.prod(shape[1:])), None, shape, group=shape[0]
            )
            if not a.get("keepdims", 1):
                layers += _flush(pending, new) + [Identity()]
                pending, shape = None, (shape[0],)
                continue
        elif op == "Relu":
            layers += _flush(pending) + [Relu()]
            pending = None
            continue
        elif op == "MaxPool":
            layers += _flush(pending)
            pending = None
            pool, shape = oracle.maxpool_layer(shape, a["kernel_shape"], a.get("strides"), a.get("pads"))
            layers.append(pool)
            continue
        elif op == "Transpose":
            perm = [p - 1 for p in a["perm"][1:]]
            index = np.arange(int(np.prod(shape))).reshape(shape).transpose(perm).reshape(-1)
            shape = tuple(shape[p] for p in perm)
            if pending is not None:
                pending = (pending[0], pending[1][index], pending[2][index])
            layers.append(Permute(index))
            continue
        elif op in ("Flatten", "Reshape", "Squeeze", "Unsqueeze"):
            shape = tuple(_out_shape(node, model)[1:])
            layers.append(Identity())
            continue
        elif op in ("Softmax", "Shape", "Gather", "Cast", "Slice", "Concat"):
            continue  # the output activation; shape chains
        else:
            raise NotImplementedError(f"oracle_onnx: {op}")
        layers += _flush(pending, new)
        pending = None
        shape = new.out_shape
    return layers + _flush(pending)


def _spatial_mean(node, a, const, shape) -> bool:
    """A ReduceMean over every spatial axis of a channels-first sample."""
    axes = a.get("axes", None) if len(const) < 2 or const[1] is None else list(const[1])
    return sorted(int(x) % (len(shape) + 1) for x in axes) == list(range(2, len(shape) + 1))


def _flush(pending, next_linear=None) -> list:
    """The pending affine composed into `next_linear` when it reads no padding, else its own layer."""
    if next_linear is None:
        if pending is None:
            return []
        kind, s, t = pending
        return [Linear(np.diag(s), t, np.eye(s.size), (s.size,), (s.size,)) if kind == "bn" else Scale(s, t)]
    if pending is None:
        return [next_linear]
    reads_padding = np.any(next_linear.S.sum(axis=1) != next_linear.S.sum(axis=1).max())
    if reads_padding:
        return _flush(pending) + [next_linear]
    return [_compose_before(next_linear, pending[1], pending[2])]


def _inferred(model):
    return {v.name: v for v in onnx.shape_inference.infer_shapes(model).graph.value_info} | {
        v.name: v for v in model.graph.output
    }


def _out_shape(node, model):
    v = _inferred(model)[node.output[0]]
    return [d.dim_value for d in v.type.tensor_type.shape.dim]


def _out_spatial(node, model):
    return _out_shape(node, model)[2:]
