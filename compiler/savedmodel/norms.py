"""TensorFlow functions for the normalization layers (SavedModel export); the activations are declared
in activations.py.

    LayerNormalization      (x − mean_A x)/√(var_A x + ε)·γ + β, A = axis … rank−1
    InstanceNormalization   the same over the spatial axes, γ and β per channel
    GroupNormalization      the same over each group's channels and the spatial axes; γ and β per channel
                            (opset 21) or per group (opset 18)
Means and variances are taken as ONNX defines them (population variance, ε inside the root).
"""

from __future__ import annotations

import tensorflow as tf

from .ops import Unsupported, _scalar, tf_op


def _normalize(v, axes, eps):
    mean, var = tf.nn.moments(v, axes=axes, keepdims=True)
    return (v - mean) / tf.sqrt(var + _scalar(eps, v))


@tf_op("LayerNormalization")
def _layer_norm(x, at):
    if at.outputs > 1 and any(at.present_outputs[1:]):
        raise Unsupported("LayerNormalization with its Mean/InvStdDev outputs")
    v = x[0]
    rank = v.shape.rank
    axis = at.get("axis", -1) % rank
    y = _normalize(v, list(range(axis, rank)), at.get("epsilon", 1e-5)) * x[1]
    return y + x[2] if len(x) > 2 and x[2] is not None else y


def _per_channel(t, rank):
    return tf.reshape(t, [-1] + [1] * (rank - 2))


@tf_op("InstanceNormalization")
def _instance_norm(x, at):
    v = x[0]
    rank = v.shape.rank
    y = _normalize(v, list(range(2, rank)), at.get("epsilon", 1e-5))
    return y * _per_channel(x[1], rank) + _per_channel(x[2], rank)


@tf_op("GroupNormalization")
def _group_norm(x, at):
    v, scale, bias = x[:3]
    groups, rank = at.get("num_groups"), v.shape.rank
    channels = v.shape[1]
    if channels is None:
        raise Unsupported("GroupNormalization with a dynamic channel count")
    grouped = tf.reshape(v, tf.concat([tf.shape(v)[:1], [groups, -1]], axis=0))
    y = _normalize(grouped, [2], at.get("epsilon", 1e-5))
    if scale.shape[0] != channels:  # opset 18: γ and β per group
        y = y * tf.reshape(scale, [groups, 1]) + tf.reshape(bias, [groups, 1])
        return tf.reshape(y, tf.shape(v))
    return tf.reshape(y, tf.shape(v)) * _per_channel(scale, rank) + _per_channel(bias, rank)
