"""Linear layers, convolution, pooling and resizing of the SavedModel export's table (ONNX NCHW in TF).

TensorFlow's CPU convolution and pooling kernels take channels last (NHWC), so each Conv,
ConvTranspose and MaxPool transposes its input NCHW → NHWC and its result back: two extra copies
per layer, the price of a graph that keeps ONNX's layout everywhere else (where relevance is
computed by element-wise ops that do not care). 1-D layers run as 2-D ones with a height of 1.

- Padding: ONNX's explicit (or SAME_UPPER/SAME_LOWER) pads are applied with tf.pad (zeros; −inf for
  max pooling) and the TF op runs VALID. Dilations are applied to the kernel (zeros inserted), so a
  strided dilated Conv is one TF op too.
- Conv with groups: depthwise 2-D when group = C_in (equal strides), else one conv per group.
- ConvTranspose: TF's transposed conv gives the full output (in − 1)·s + k_eff + output_padding;
  ONNX's pads then crop it (negative: pad it).
- MaxPool's indices output (flat NCHW positions, as onnxruntime): windows as patches, argmax over each
  window (the first maximum in row-major order on ties, as onnxruntime), converted to input positions;
  MaxUnpool scatters values back to those flat positions.
- Resize is separable: along each resized axis out = M·in with M [out, in] computed once, by onnx's
  reference implementation applied to the unit vectors, so every mode follows the ONNX definition;
  an M of single ones becomes a gather.
"""

from __future__ import annotations

import numpy as np
import onnx
import tensorflow as tf
from onnx import helper

from ..geometry import same_pads
from .ops import Unsupported, static, tf_op

# --- dense layers ------------------------------------------------------------------------------------


@tf_op("Gemm")
def _gemm(x, at):
    a, b = x[0], x[1]
    y = tf.matmul(a, b, transpose_a=bool(at.get("transA", 0)), transpose_b=bool(at.get("transB", 0)))
    if at.get("alpha", 1.0) != 1.0:
        y = y * tf.constant(at.get("alpha"), y.dtype)
    if len(x) > 2 and x[2] is not None:
        c = x[2] if at.get("beta", 1.0) == 1.0 else x[2] * tf.constant(at.get("beta"), y.dtype)
        y = y + c
    return y


@tf_op("MatMul")
def _matmul(x, at):
    a, b = x[0], x[1]
    if a.shape.rank == 1:
        return tf.squeeze(tf.matmul(a[None, :], b), axis=-2)
    if b.shape.rank == 1:
        return tf.squeeze(tf.matmul(a, b[:, None]), axis=-1)
    return tf.matmul(a, b)  # broadcasts the batch dimensions, as numpy's matmul


# --- layout and geometry -------------------------------------------------------------------------------


def _channels_last(t):
    return tf.transpose(t, [0, *range(2, t.shape.rank), 1])


def _channels_first(t):
    rank = t.shape.rank
    return tf.transpose(t, [0, rank - 1, *range(1, rank - 1)])


def _spatial_dims(t) -> list:
    return [t.shape[d] for d in range(2, t.shape.rank)]


def _lift_1d(at, x, kernel_rank):
    """1-D → 2-D with a height of 1: (x with an inserted axis 2, attribute lists with a leading 1/0)."""
    if kernel_rank != 1:
        return x, lambda name, fill: at.get(name)
    lift = lambda name, fill: (
        None
        if at.get(name) is None
        else [fill, *at.get(name)]
        if name != "pads"
        else [0, at.get(name)[0], 0, at.get(name)[1]]
    )
    return tf.expand_dims(x, 2), lift


def _pads(at_value, auto_pad, sizes, kernel, strides):
    """[(begin, end)] per spatial axis from explicit pads or auto_pad (which needs static sizes)."""
    n = len(kernel)
    if auto_pad in ("NOTSET", None):
        pads = at_value or [0] * (2 * n)
        return [(pads[i], pads[i + n]) for i in range(n)]
    if auto_pad == "VALID":
        return [(0, 0)] * n
    if None in sizes:
        raise Unsupported(f"auto_pad={auto_pad} needs static spatial sizes")
    return list(zip(*same_pads(auto_pad, sizes, kernel, strides)))


def _pad_spatial_last(t, pads, value=0.0):
    """Pad the spatial axes of a channels-last tensor."""
    if not any(b or e for b, e in pads):
        return t
    return tf.pad(t, [[0, 0], *[[b, e] for b, e in pads], [0, 0]], constant_values=value)


def _dilate_kernel(w, dilations, first_spatial):
    """Insert d − 1 zeros between the taps of each spatial axis of `w` (axes from `first_spatial`)."""
    for i, d in enumerate(dilations):
        if d == 1:
            continue
        axis = first_spatial + i
        k = w.shape[axis]
        stacked = tf.stack([w, *[tf.zeros_like(w)] * (d - 1)], axis=axis + 1)
        shape = [*w.shape[:axis], k * d, *w.shape[axis + 1 :]]
        w = tf.slice(
            tf.reshape(stacked, shape), [0] * len(shape), [*w.shape[:axis], (k - 1) * d + 1, *w.shape[axis + 1 :]]
        )
    return w


# --- convolution ---------------------------------------------------------------------------------------


@tf_op("Conv")
def _conv(x, at):
    w = x[1]
    kernel_rank = w.shape.rank - 2
    inp, attr = _lift_1d(at, x[0], kernel_rank)
    if kernel_rank == 1:
        w = tf.expand_dims(w, 2)
    rank = w.shape.rank - 2
    dilations = attr("dilations", 1) or [1] * rank
    strides = attr("strides", 1) or [1] * rank
    w = _dilate_kernel(w, dilations, 2)
    kernel = list(w.shape[2:])
    pads = _pads(attr("pads", 0), at.get("auto_pad", "NOTSET"), _spatial_dims(inp), kernel, strides)
    y = _grouped_conv(_pad_spatial_last(_channels_last(inp), pads), w, strides, at.get("group", 1))
    if len(x) > 2 and x[2] is not None:
        y = y + x[2]
    y = _channels_first(y)
    return tf.squeeze(y, 2) if kernel_rank == 1 else y


def _grouped_conv(x_last, w, strides, groups):
    """VALID convolution of a channels-last input with an ONNX kernel [M, C/groups, *k]."""
    rank = w.shape.rank - 2
    channels = x_last.shape[-1]
    if groups == 1:
        return tf.nn.convolution(x_last, tf.transpose(w, [*range(2, rank + 2), 1, 0]), strides, "VALID")
    if groups == channels and rank == 2 and strides[0] == strides[1]:  # depthwise [kh, kw, C, M/C]
        multiplier = w.shape[0] // groups
        depthwise = tf.transpose(tf.reshape(w, [groups, multiplier, *w.shape[2:]]), [2, 3, 0, 1])
        return tf.nn.depthwise_conv2d(x_last, depthwise, [1, *strides, 1], "VALID")
    parts = zip(tf.split(x_last, groups, axis=-1), tf.split(w, groups, axis=0))
    return tf.concat([_grouped_conv(xg, wg, strides, 1) for xg, wg in parts], axis=-1)


@tf_op("ConvTranspose")
def _conv_transpose(x, at):
    w = x[1]  # [C, M/groups, *k]
    kernel_rank = w.shape.rank - 2
    inp, attr = _lift_1d(at, x[0], kernel_rank)
    if kernel_rank == 1:
        w = tf.expand_dims(w, 2)
    rank = w.shape.rank - 2
    strides = attr("strides", 1) or [1] * rank
    w = _dilate_kernel(w, attr("dilations", 1) or [1] * rank, 2)
    kernel, sizes = list(w.shape[2:]), _spatial_dims(inp)
    if any(s is None for s in sizes):
        raise Unsupported("a ConvTranspose needs static spatial sizes")
    extra = attr("output_padding", 0) or [0] * rank
    full = [(n - 1) * s + k + e for n, s, k, e in zip(sizes, strides, kernel, extra)]
    crops = _transpose_crops(at, attr, full, sizes, strides, kernel_rank)
    groups = at.get("group", 1)
    x_last = _channels_last(inp)
    outs = []
    for xg, wg in zip(tf.split(x_last, groups, axis=-1), tf.split(w, groups, axis=0)):
        shape = tf.concat([tf.shape(xg)[:1], tf.constant([*full, wg.shape[1]], tf.int32)], 0)
        filters = tf.transpose(wg, [*range(2, rank + 2), 1, 0])  # [*k, M/groups, C/groups]
        outs.append(tf.nn.conv_transpose(xg, filters, shape, strides, "VALID"))
    y = outs[0] if groups == 1 else tf.concat(outs, axis=-1)
    y = _crop_or_pad_spatial_last(y, crops)
    if len(x) > 2 and x[2] is not None:
        y = y + x[2]
    y = _channels_first(y)
    return tf.squeeze(y, 2) if kernel_rank == 1 else y


def _transpose_crops(at, attr, full, sizes, strides, kernel_rank):
    """(begin, end) removed from each axis of the full transposed-conv output, per ONNX's ConvTranspose."""
    rank = len(full)
    auto_pad = at.get("auto_pad", "NOTSET")
    target = attr("output_shape", 1)
    if target is not None:
        target = list(target)[-rank:]
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        target = [n * s for n, s in zip(sizes, strides)]
    if target is None:
        pads = attr("pads", 0) or [0] * (2 * rank)
        return [(pads[i], pads[i + rank]) for i in range(rank)]
    crops = []
    for f, t in zip(full, target):  # onnxruntime: SAME_UPPER crops less at the start; else more
        total = f - t
        small = total // 2
        crops.append((small, total - small) if auto_pad == "SAME_UPPER" else (total - small, small))
    return crops


def _crop_or_pad_spatial_last(t, crops):
    if not any(b or e for b, e in crops):
        return t
    t = _pad_spatial_last(t, [(max(-b, 0), max(-e, 0)) for b, e in crops])
    index = (slice(None), *[slice(max(b, 0), -e if e > 0 else None) for b, e in crops], slice(None))
    return t[index]


# --- pooling -------------------------------------------------------------------------------------------


@tf_op("MaxPool")
def _max_pool(x, at):
    kernel_rank = len(at.get("kernel_shape"))
    if kernel_rank > 2:
        raise Unsupported("3-D max pooling is not implemented")
    if at.get("storage_order", 0):
        raise Unsupported("storage_order=1 is not implemented")
    inp, attr = _lift_1d(at, x[0], kernel_rank)
    kernel = attr("kernel_shape", 1)
    strides = attr("strides", 1) or [1, 1]
    dilations = attr("dilations", 1) or [1, 1]
    effective = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    sizes = _spatial_dims(inp)
    pads = _pads(attr("pads", 0), at.get("auto_pad", "NOTSET"), sizes, effective, strides)
    if at.get("ceil_mode", 0):
        pads = [(b, e + _ceil_extra(n, b, e, k, s)) for (b, e), n, k, s in zip(pads, sizes, effective, strides)]
    padded = _pad_spatial_last(_channels_last(inp), pads, float("-inf"))
    with_indices = at.outputs > 1 and at.present_outputs[1]
    if not with_indices and dilations == [1, 1]:
        y = tf.nn.max_pool2d(padded, kernel, strides, "VALID")
        y = _channels_first(y)
        return tf.squeeze(y, 2) if kernel_rank == 1 else y
    y, indices = _max_pool_patches(padded, tf.shape(inp, out_type=tf.int64), kernel, strides, dilations, pads)
    if kernel_rank == 1:
        y, indices = tf.squeeze(y, 2), tf.squeeze(indices, 2)
    return (y, indices) if at.outputs > 1 else y


@tf_op("MaxUnpool")
def _max_unpool(x, at):
    """Each value written at its flat position (MaxPool's indices) in zeros of the given output shape; the
    shape input is required (lrpc emits it: the pooled input's shape)."""
    if len(x) < 3 or x[2] is None:
        raise Unsupported("MaxUnpool without its output_shape input is not implemented")
    shape = tf.cast(x[2], tf.int64)
    flat = tf.scatter_nd(tf.reshape(x[1], [-1, 1]), tf.reshape(x[0], [-1]), tf.reduce_prod(shape)[None])
    return tf.reshape(flat, shape)


def _ceil_extra(n, begin, end, k, s):
    """Extra end padding for ceil_mode: one more window when it starts inside the input or left padding."""
    if n is None:
        raise Unsupported("ceil_mode=1 needs static spatial sizes")
    floor_out = (n + begin + end - k) // s + 1
    ceil_out = -(-(n + begin + end - k) // s) + 1
    if ceil_out > floor_out and (ceil_out - 1) * s >= n + begin:
        ceil_out -= 1
    return max((ceil_out - 1) * s + k - (n + begin + end), 0)


def _max_pool_patches(padded, nchw_shape, kernel, strides, dilations, pads):
    """Max pooling with ONNX's flat NCHW indices of the winners (padded: channels last, padded with −inf)."""
    channels = padded.shape[-1]
    patches = tf.image.extract_patches(padded, [1, *kernel, 1], [1, *strides, 1], [1, *dilations, 1], "VALID")
    shape = tf.shape(patches)
    windows = tf.reshape(patches, tf.concat([shape[:3], [kernel[0] * kernel[1], channels]], 0))
    y = tf.reduce_max(windows, axis=3)
    tap = tf.argmax(windows, axis=3, output_type=tf.int64)  # [N, OH, OW, C], first maximum on ties
    out_h = tf.range(tf.cast(shape[1], tf.int64))[None, :, None, None]
    out_w = tf.range(tf.cast(shape[2], tf.int64))[None, None, :, None]
    h = out_h * strides[0] - pads[0][0] + (tap // kernel[1]) * dilations[0]
    w = out_w * strides[1] - pads[1][0] + (tap % kernel[1]) * dilations[1]
    n = tf.range(nchw_shape[0])[:, None, None, None]
    c = tf.range(channels, dtype=tf.int64)[None, None, None, :]
    index = ((n * channels + c) * nchw_shape[2] + h) * nchw_shape[3] + w
    return _channels_first(y), _channels_first(index)


@tf_op("GlobalMaxPool", "GlobalAveragePool")
def _global_pool(x, at):
    reduce = tf.reduce_max if at.op == "GlobalMaxPool" else tf.reduce_mean
    return reduce(x[0], axis=list(range(2, x[0].shape.rank)), keepdims=True)


# --- resizing ------------------------------------------------------------------------------------------


@tf_op("Resize")
def _resize(x, at):
    if at.get("coordinate_transformation_mode", "half_pixel") == "tf_crop_and_resize":
        raise Unsupported("coordinate_transformation_mode='tf_crop_and_resize' is not implemented")
    if at.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise Unsupported("keep_aspect_ratio_policy other than 'stretch' is not implemented")
    rank = x[0].shape.rank
    axes = [a % rank for a in at.get("axes", range(rank))]
    scales = x[2] if len(x) > 2 and x[2] is not None and x[2].shape.num_elements() else None
    sizes = x[3] if len(x) > 3 and x[3] is not None else None
    per_axis = static(scales if scales is not None else sizes, "Resize's scales or sizes").reshape(-1)
    y = x[0]
    for axis, target in zip(axes, per_axis):
        length = y.shape[axis]
        if (scales is not None and target == 1.0) or (scales is None and target == length):
            continue
        if length is None and scales is None:  # a dynamic axis (the batch) kept: checked when run
            tf.debugging.assert_equal(
                tf.shape(y, out_type=tf.int64)[axis],
                tf.constant(int(target), tf.int64),
                message=f"Resize changes the size of axis {axis}, which is dynamic",
            )
            continue
        if length is None:
            raise Unsupported(f"resizing axis {axis} needs its size static")
        y = _apply_along(y, axis, _resize_matrix(at, length, float(target), scales is not None))
    return y


def _resize_matrix(at, length: int, target: float, is_scale: bool) -> np.ndarray:
    """M [out, in] of a 1-D Resize with the node's attributes (onnx's reference implementation on eye)."""
    keep = {
        k: v
        for k, v in at.values.items()
        if k
        in (
            "mode",
            "coordinate_transformation_mode",
            "nearest_mode",
            "cubic_coeff_a",
            "exclude_outside",
            "antialias",
            "extrapolation_value",
        )
    }
    node = helper.make_node(
        "Resize", ["x", "", "scales" if is_scale else "", "" if is_scale else "sizes"], ["y"], axes=[1], **keep
    )
    inputs = [helper.make_tensor_value_info("x", onnx.TensorProto.DOUBLE, [length, length])]
    init = [
        helper.make_tensor("scales", onnx.TensorProto.FLOAT, [1], [target])
        if is_scale
        else helper.make_tensor("sizes", onnx.TensorProto.INT64, [1], [int(target)])
    ]
    graph = helper.make_graph(
        [node], "resize", inputs, [helper.make_tensor_value_info("y", onnx.TensorProto.DOUBLE, None)], init
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    from onnx.reference import ReferenceEvaluator

    columns = ReferenceEvaluator(model).run(None, {"x": np.eye(length)})[0]  # row i: the image of e_i
    return columns.T


def _apply_along(t, axis, matrix):
    """out[..., j, ...] = Σ_i matrix[j, i] · t[..., i, ...] along `axis` (a gather when M selects)."""
    if np.all((matrix == 0) | (matrix == 1)) and np.all(matrix.sum(axis=1) == 1):
        return tf.gather(t, matrix.argmax(axis=1), axis=axis)
    moved = tf.experimental.numpy.moveaxis(t, axis, -1)
    out = tf.linalg.matmul(moved, tf.constant(matrix.T, t.dtype))
    return tf.experimental.numpy.moveaxis(out, -1, axis)
