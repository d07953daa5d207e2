"""The TensorFlow op table of the SavedModel export: ONNX op type → a small TF function.

Each function takes the node's inputs (TF tensors; None for an omitted optional input) and its
attributes (`Attrs`), and returns its output tensor, or a tuple for a multi-output node. It follows
the ONNX operator's definition for the opsets lrpc emits (16–26) and raises `Unsupported` for an
attribute variant it does not implement, so that the export stops with the node named instead of
writing a model that computes something else.

This module holds the table and the element-wise, reduction and random ops — the activations and
element-wise ops declared in activations.py are registered from their declarations —; shape and
indexing ops are in shape.py, convolution, pooling and resizing (NCHW) in spatial.py.
Importing it imports TensorFlow: lrpc imports it only when a SavedModel is asked for.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from onnx import helper, numpy_helper

from ..activations import ELEMENTWISE

TF_OPS: dict = {}


class Unsupported(Exception):
    """An ONNX attribute variant or input form the TensorFlow table does not implement."""


def tf_op(*op_types: str):
    """Register the decorated function as the TensorFlow implementation of `op_types`."""

    def register(fn):
        for op in op_types:
            if op in TF_OPS:
                raise ValueError(f"two TensorFlow functions for {op}")
            TF_OPS[op] = fn
        return fn

    return register


class Attrs:
    """A node's attributes as Python values (strings decoded, tensors as numpy) and its output count."""

    def __init__(self, node):
        self.op = node.op_type
        self.values = {a.name: _python_value(helper.get_attribute_value(a)) for a in node.attribute}
        self.outputs = len(node.output)
        self.present_outputs = [bool(name) for name in node.output]

    def get(self, name: str, default=None):
        return self.values.get(name, default)


def _python_value(value):
    if isinstance(value, bytes):
        return value.decode()
    if hasattr(value, "data_type"):  # a TensorProto
        return numpy_helper.to_array(value)
    if isinstance(value, list):
        return [_python_value(v) for v in value]
    return value


def static(t, what: str) -> np.ndarray:
    """The value of a tensor known at trace time (a constant, or computed from constants only)."""
    value = tf.get_static_value(t)
    if value is None:
        raise Unsupported(f"{what} must be a constant (it is computed at run time)")
    return np.asarray(value)


def axis_list(t, what: str) -> list[int] | None:
    return None if t is None else [int(a) for a in static(t, what).reshape(-1)]


# ONNX TensorProto data types → TensorFlow dtypes (the numeric ones lrpc graphs use)
DTYPES = {
    1: tf.float32,
    2: tf.uint8,
    3: tf.int8,
    5: tf.int16,
    6: tf.int32,
    7: tf.int64,
    9: tf.bool,
    10: tf.float16,
    11: tf.float64,
    16: tf.bfloat16,
}


def tf_dtype(onnx_type: int):
    if onnx_type not in DTYPES:
        raise Unsupported(f"data type {helper.tensor_dtype_to_string(onnx_type)} has no TensorFlow mapping here")
    return DTYPES[onnx_type]


# --- element-wise arithmetic and logic (numpy broadcasting, as ONNX) ---------------------------------


def _divide(a, b):
    return tf.math.truncatediv(a, b) if a.dtype.is_integer else a / b  # ONNX integer Div truncates


BINARY = {
    "Add": tf.add,
    "Sub": tf.subtract,
    "Mul": tf.multiply,
    "Div": _divide,
    "Equal": tf.equal,
    "Greater": tf.greater,
    "Less": tf.less,
    "GreaterOrEqual": tf.greater_equal,
    "LessOrEqual": tf.less_equal,
    "And": tf.logical_and,
    "Or": tf.logical_or,
}


@tf_op(*BINARY)
def _binary(x, at):
    return BINARY[at.op](x[0], x[1])


VARIADIC = {"Max": tf.maximum, "Min": tf.minimum, "Sum": tf.add}


@tf_op(*VARIADIC)
def _variadic(x, at):
    total = x[0]
    for t in x[1:]:
        total = VARIADIC[at.op](total, t)
    return total


UNARY = {
    "Sign": tf.sign,
    "Not": tf.logical_not,
    "Floor": tf.floor,
    "Ceil": tf.math.ceil,
    "Relu": tf.nn.relu,
    "Identity": tf.identity,
}


@tf_op(*UNARY)
def _unary(x, at):
    return UNARY[at.op](x[0])


def _declared(e):
    return lambda x, at: e.tf(tf, x, at)


for _e in ELEMENTWISE.values():  # the activations and other element-wise ops of activations.py
    tf_op(_e.op)(_declared(_e))


def _scalar(value, like):
    return tf.constant(value, like.dtype)


@tf_op("Where")
def _where(x, at):
    shape = tf.broadcast_dynamic_shape(tf.broadcast_dynamic_shape(tf.shape(x[0]), tf.shape(x[1])), tf.shape(x[2]))
    return tf.where(tf.broadcast_to(x[0], shape), tf.broadcast_to(x[1], shape), tf.broadcast_to(x[2], shape))


@tf_op("Cast")
def _cast(x, at):
    return tf.cast(x[0], tf_dtype(at.get("to")))


@tf_op("Dropout")
def _dropout(x, at):  # inference: the input unchanged, mask all true
    return (x[0], tf.ones_like(x[0], tf.bool)) if at.outputs > 1 else x[0]


@tf_op("Softmax", "LogSoftmax")
def _softmax(x, at):
    axis = at.get("axis", -1)
    return tf.nn.softmax(x[0], axis=axis) if at.op == "Softmax" else tf.nn.log_softmax(x[0], axis=axis)


# --- reductions --------------------------------------------------------------------------------------

REDUCE = {
    "ReduceSum": tf.reduce_sum,
    "ReduceMax": tf.reduce_max,
    "ReduceMin": tf.reduce_min,
    "ReduceMean": tf.reduce_mean,
    "ReduceProd": tf.reduce_prod,
}


@tf_op(*REDUCE)
def _reduce(x, at):
    # axes: an attribute before opset 18 (ReduceSum: 13), an input from then on
    if len(x) > 1 and tf.get_static_value(x[1]) is None:  # axes computed at run time (combine.py's unbroadcast)
        if not at.get("noop_with_empty_axes", 0):
            raise Unsupported(f"{at.op}'s axes are computed at run time, and empty axes would mean all of them")
        return REDUCE[at.op](x[0], axis=tf.reshape(x[1], [-1]), keepdims=bool(at.get("keepdims", 1)))
    axes = at.get("axes") if len(x) < 2 else axis_list(x[1], f"{at.op}'s axes")
    if not axes:
        if at.get("noop_with_empty_axes", 0):
            return x[0]
        axes = None
    return REDUCE[at.op](x[0], axis=axes, keepdims=bool(at.get("keepdims", 1)))


@tf_op("NonZero")
def _non_zero(x, at):  # ONNX: [rank, n] indices in row-major order, as tf.where's [n, rank] transposed
    return tf.transpose(tf.where(tf.not_equal(x[0], tf.zeros([], x[0].dtype))))


@tf_op("ArgMax", "ArgMin")
def _arg_extreme(x, at):
    if at.get("select_last_index", 0):
        raise Unsupported("select_last_index=1 is not implemented")
    find = tf.argmax if at.op == "ArgMax" else tf.argmin
    axis = at.get("axis", 0)
    y = find(x[0], axis=axis, output_type=tf.int64)  # the first extreme index on ties, as ONNX
    return tf.expand_dims(y, axis) if at.get("keepdims", 1) else y


@tf_op("TopK")
def _top_k(x, at):
    rank = x[0].shape.rank
    axis = at.get("axis", -1) % rank
    k = int(static(x[1], "TopK's k").reshape(-1)[0])
    if not at.get("sorted", 1):
        raise Unsupported("sorted=0 is not implemented")
    moved = _axis_last(x[0], axis)
    values, indices = tf.math.top_k(moved if at.get("largest", 1) else -moved, k=k)
    if not at.get("largest", 1):
        values = -values
    return _axis_back(values, axis), _axis_back(tf.cast(indices, tf.int64), axis)


def _axis_last(t, axis):
    rank = t.shape.rank
    return t if axis == rank - 1 else tf.transpose(t, [a for a in range(rank) if a != axis] + [axis])


def _axis_back(t, axis):
    rank = t.shape.rank
    if axis == rank - 1:
        return t
    perm = list(range(rank - 1))
    perm.insert(axis, rank - 1)
    return tf.transpose(t, perm)


# --- random draws: seeded, but not onnxruntime's numbers (ONNX does not fix the generator) -------------


@tf_op("RandomNormalLike", "RandomUniformLike")
def _random_like(x, at):
    dtype = tf_dtype(at.get("dtype")) if at.get("dtype") is not None else x[0].dtype
    seed = tf.constant([int(at.get("seed", 0.0)), 0], tf.int64)
    if at.op == "RandomNormalLike":
        return tf.random.stateless_normal(tf.shape(x[0]), seed, at.get("mean", 0.0), at.get("scale", 1.0), dtype)
    return tf.random.stateless_uniform(tf.shape(x[0]), seed, at.get("low", 0.0), at.get("high", 1.0), dtype)
