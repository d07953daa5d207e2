"""Shape, routing and indexing ops of the SavedModel export's table, as TensorFlow functions.

Shapes may hold the dynamic batch dimension, so shape inputs (Reshape's shape, Expand's, Tile's
repeats) are used as tensors; inputs that decide the graph's structure (axes, Slice's axes, Pad's
pads, Split's sizes) must be constants, which they are in what lrpc emits. ONNX's index conventions
are kept: negative indices count from the end (Gather), Reshape's 0 copies the input's dimension
unless allowzero=1, Slice clamps like Python slicing, ScatterElements with reduction='add' sums
duplicates.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from .ops import Unsupported, axis_list, static, tf_dtype, tf_op


@tf_op("Shape")
def _shape(x, at):
    return tf.shape(x[0], out_type=tf.int64)[at.get("start", 0) : at.get("end", None)]


@tf_op("Size")
def _size(x, at):
    return tf.size(x[0], out_type=tf.int64)


@tf_op("Reshape")
def _reshape(x, at):
    shape = tf.cast(x[1], tf.int64)
    if not at.get("allowzero", 0):  # 0 copies the input's dimension at that position
        n = shape.shape[0]
        current = tf.concat([tf.shape(x[0], out_type=tf.int64), tf.zeros([n], tf.int64)], 0)[:n]
        shape = tf.where(shape == 0, current, shape)
    return tf.reshape(x[0], shape)


@tf_op("Flatten")
def _flatten(x, at):
    axis = at.get("axis", 1)
    axis = axis + x[0].shape.rank if axis < 0 else axis
    shape = tf.shape(x[0], out_type=tf.int64)
    return tf.reshape(x[0], tf.stack([tf.reduce_prod(shape[:axis]), tf.reduce_prod(shape[axis:])]))


@tf_op("Squeeze")
def _squeeze(x, at):
    axes = axis_list(x[1], "Squeeze's axes") if len(x) > 1 and x[1] is not None else at.get("axes")
    return tf.squeeze(x[0], axis=axes)


@tf_op("Unsqueeze")
def _unsqueeze(x, at):
    axes = axis_list(x[1], "Unsqueeze's axes") if len(x) > 1 else at.get("axes")
    rank = x[0].shape.rank + len(axes)
    y = x[0]
    for axis in sorted(a % rank for a in axes):
        y = tf.expand_dims(y, axis)
    return y


@tf_op("Transpose")
def _transpose(x, at):
    perm = at.get("perm")
    return tf.transpose(x[0], perm if perm is not None else list(reversed(range(x[0].shape.rank))))


@tf_op("Concat")
def _concat(x, at):
    return tf.concat([t for t in x if t is not None], axis=at.get("axis"))


@tf_op("Split")
def _split(x, at):
    axis = at.get("axis", 0)
    if len(x) > 1 and x[1] is not None:
        sizes = [int(s) for s in static(x[1], "Split's sizes")]
    else:  # equal parts; opset 18's num_outputs makes the last one smaller when it does not divide
        parts, length = at.get("num_outputs", at.outputs), x[0].shape[axis]
        if length is None:
            return tuple(tf.split(x[0], parts, axis=axis))
        step = -(-length // parts)
        sizes = [min(step, length - i * step) for i in range(parts)]
    return tuple(tf.split(x[0], sizes, axis=axis))


@tf_op("Slice")
def _slice(x, at):
    rank = x[0].shape.rank
    starts, ends = _as_int64(x[1]), _as_int64(x[2])
    axes = axis_list(x[3], "Slice's axes") if len(x) > 3 and x[3] is not None else list(range(starts.shape[0]))
    steps = _as_int64(x[4]) if len(x) > 4 and x[4] is not None else tf.ones_like(starts)
    position = {a % rank: i for i, a in enumerate(axes)}
    pick = lambda v, fill: tf.stack(
        [v[position[d]] if d in position else tf.constant(fill, tf.int64) for d in range(rank)]
    )
    untouched = sum(1 << d for d in range(rank) if d not in position)
    return tf.strided_slice(
        x[0], pick(starts, 0), pick(ends, 0), pick(steps, 1), begin_mask=untouched, end_mask=untouched
    )  # Python slicing's clamping = ONNX's


def _as_int64(t):
    return tf.cast(t, tf.int64)


def _nonnegative(indices, length):
    indices = tf.cast(indices, tf.int64)
    return tf.where(indices < 0, indices + tf.cast(length, tf.int64), indices)


@tf_op("Gather")
def _gather(x, at):
    axis = at.get("axis", 0) % x[0].shape.rank
    return tf.gather(x[0], _nonnegative(x[1], tf.shape(x[0])[axis]), axis=axis)


def _element_coordinates(indices, axis, length):
    """[..., rank] coordinates: each element's own position, with `indices` on `axis`."""
    rank = indices.shape.rank
    grids = tf.meshgrid(*[tf.range(tf.shape(indices, out_type=tf.int64)[d]) for d in range(rank)], indexing="ij")
    grids[axis] = _nonnegative(indices, length)
    return tf.stack(grids, axis=-1)


@tf_op("GatherElements")
def _gather_elements(x, at):
    axis = at.get("axis", 0) % x[0].shape.rank
    return tf.gather_nd(x[0], _element_coordinates(x[1], axis, tf.shape(x[0])[axis]))


SCATTER = {
    "none": tf.tensor_scatter_nd_update,
    "add": tf.tensor_scatter_nd_add,
    "max": tf.tensor_scatter_nd_max,
    "min": tf.tensor_scatter_nd_min,
}


@tf_op("ScatterElements")
def _scatter_elements(x, at):
    reduction = at.get("reduction", "none")
    if reduction not in SCATTER:
        raise Unsupported(f"reduction='{reduction}' is not implemented")
    axis = at.get("axis", 0) % x[0].shape.rank
    return SCATTER[reduction](x[0], _element_coordinates(x[1], axis, tf.shape(x[0])[axis]), x[2])


@tf_op("GatherND")
def _gather_nd(x, at):
    return tf.gather_nd(x[0], tf.cast(x[1], tf.int64), batch_dims=at.get("batch_dims", 0))


@tf_op("Expand")
def _expand(x, at):
    shape = tf.broadcast_dynamic_shape(tf.shape(x[0], out_type=tf.int64), tf.cast(x[1], tf.int64))
    return tf.broadcast_to(x[0], shape)


@tf_op("Tile")
def _tile(x, at):
    return tf.tile(x[0], tf.cast(x[1], tf.int64))


@tf_op("Pad")
def _pad(x, at):
    rank = x[0].shape.rank
    pads = [int(p) for p in static(x[1], "Pad's pads")]
    axes = axis_list(x[3], "Pad's axes") if len(x) > 3 and x[3] is not None else list(range(rank))
    widths = [[0, 0] for _ in range(rank)]
    for i, axis in enumerate(axes):
        widths[axis % rank] = [pads[i], pads[i + len(axes)]]
    y = _crop(x[0], [[min(b, 0), min(e, 0)] for b, e in widths])  # negative pads remove elements
    widths = [[max(b, 0), max(e, 0)] for b, e in widths]
    mode = at.get("mode", "constant")
    if mode == "constant":
        value = x[2] if len(x) > 2 and x[2] is not None else tf.zeros([], y.dtype)
        return tf.pad(y, widths, constant_values=tf.reshape(value, []))
    if mode == "reflect":
        return tf.pad(y, widths, mode="REFLECT")
    if mode == "edge":
        for axis, (b, e) in enumerate(widths):
            if b or e:
                n = tf.shape(y, out_type=tf.int64)[axis]
                y = tf.gather(y, tf.clip_by_value(tf.range(-b, n + e), 0, n - 1), axis=axis)
        return y
    raise Unsupported(f"mode='{mode}' is not implemented")


def _crop(t, negative_widths):
    if not any(b or e for b, e in negative_widths):
        return t
    index = tuple(slice(-b, (e if e else None)) for b, e in negative_widths)
    return t[index]


@tf_op("ConstantOfShape")
def _constant_of_shape(x, at):
    value = at.get("value")
    value = np.zeros(1, np.float32) if value is None else value
    return tf.fill(tf.cast(x[0], tf.int64), tf.constant(value.reshape(-1)[0], dtype=tf.as_dtype(value.dtype)))


@tf_op("Constant")
def _constant(x, at):
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if at.get(key) is not None:
            value = np.asarray(at.get(key))
            return tf.constant(value.astype(np.int64) if key.startswith("value_int") else value)
    raise Unsupported("only numeric value attributes are implemented")


@tf_op("Range")
def _range(x, at):
    return tf.range(tf.reshape(x[0], []), tf.reshape(x[1], []), tf.reshape(x[2], []))


@tf_op("EyeLike")
def _eye_like(x, at):
    dtype = tf_dtype(at.get("dtype")) if at.get("dtype") is not None else x[0].dtype
    shape = tf.shape(x[0], out_type=tf.int64)
    rows, cols = tf.range(shape[0])[:, None], tf.range(shape[1])[None, :]
    return tf.cast(cols - rows == at.get("k", 0), dtype)
