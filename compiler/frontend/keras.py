"""Keras frontend: a `.keras` / `.h5` file or a SavedModel folder → ONNX through tf2onnx, then the ONNX path.

TensorFlow is optional (`pip install "lrpc[keras]"`); it is imported only when a Keras source is given.

Route for a Keras model, chosen for memory. Freezing the variables into a TensorFlow GraphDef — what
tf2onnx's `from_keras` and `from_function` do — holds several copies of every weight: converting
VGG-16 (0.55 GB of float32 weights) went past 9 GB here. Instead:

1. trace `model.stateless_call(weights, x, training=False)` with every weight a graph input, so the
   GraphDef TensorFlow builds and optimizes (grappler) holds no weight at all;
2. turn those inputs into empty `Const` nodes and hand tf2onnx the weight bytes beside the graph
   (`const_node_values`, its large-model mechanism): it converts with the real constants, pushes the
   NHWC↔NCHW Transposes out and folds biases, as usual; opset 17, the batch dimension dynamic. Its
   optimizers re-serialize every Const after each pass, which grows protobuf's arena by the weights'
   size each time; Consts are serialized once, at the end, instead;
3. map node and value names back to Keras layer names: TensorFlow's name scopes are unique per trace,
   so tf2onnx writes `conv_a_1/BiasAdd` for layer `conv_a`; it becomes `conv_a/BiasAdd` (a nested
   model's layer: `backbone/conv_a/BiasAdd`), by the scope each layer call opened while tracing. A node
   tf2onnx creates to replace another (a Conv with its bias folded in) keeps the replaced node's scope.
   tf2onnx's counters (`Transpose__17`) are renumbered in graph order (frontend/keras_onnx.py), and its
   own walks over sets are put in a fixed order while it converts (frontend/tf2onnx_patches.py), so the same
   model always gives the same ONNX bytes, in any process.
4. ops tf2onnx has no converter for are rewritten in the GraphDef first (frontend/keras_graph.py: grouped
   Conv2D calls inlined, Erfc, Keras' LayerNorm); one it still cannot convert is one LrpcError naming the op
   and its Keras layer.

Grappler does not see the weights, so it cannot fold a BatchNormalization into the Conv before it
under the BN's name: the Conv keeps its own layer's name and lrpc's canonization folds the BN.
A channels-last model keeps its channels-last input; the relevance map has the input's shape.

A SavedModel folder (`saved_model.pb` inside) has no Keras layers to trace without state: its
`serving_default` signature goes through tf2onnx's `from_function` (freezing, with its memory cost),
then the same rewrites and conversion as a Keras model; node names keep TensorFlow's scopes minus the
signature wrappers (`conv_a_1/BiasAdd`; rule maps and `--explain` accept `conv_a` for it).
"""

from __future__ import annotations

import contextlib
import os
import re

import onnx

from ..errors import LrpcError
from .keras_graph import rewrite_for_tf2onnx, unconverted, unconverted_message
from .keras_onnx import (
    WRAPPER,
    drop_noop_reshapes,
    norm_means_as_reduce_mean,
    squeeze_after_channel_constants,
    tidy_names,
)
from .tf2onnx_patches import (
    constants_synced_once,
    deterministic_walks,
    einsum_parts_keep_scope,
    quiet,
    replacements_keep_scope,
)

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
OPSET = 17
INSTALL = 'pip install "lrpc[keras]"'


def is_keras_source(source) -> bool:
    """Whether `source` names a Keras file (by suffix) or a SavedModel folder."""
    if not isinstance(source, (str, os.PathLike)):
        return False
    path = os.fspath(source)
    if os.path.isdir(path):
        return os.path.isfile(os.path.join(path, "saved_model.pb"))
    return path.lower().endswith(KERAS_SUFFIXES)


def load(source, opset: int = OPSET) -> onnx.ModelProto:
    """Convert a `.keras`/`.h5` file or a SavedModel folder into an ONNX model (weights inline)."""
    path = os.fspath(source)
    if not os.path.exists(path):
        raise LrpcError(f"{path}: no such file or folder")
    tf, keras, _ = _import_tensorflow(path)
    if os.path.isdir(path):
        return _from_saved_model(tf, path, opset)
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as e:  # Keras raises ValueError, OSError, TypeError, h5py errors ... for a bad file
        raise LrpcError(
            f"{path}: Keras cannot load it ({type(e).__name__}: {_first_line(e)}); "
            "lrpc reads models saved by model.save('model.keras') or '.h5'"
        ) from e
    return from_keras_model(model, opset)


def from_keras_model(model, opset: int = OPSET) -> onnx.ModelProto:
    """A built Keras 3 model → ONNX: weights as constants, dynamic batch, Keras layer names."""
    tf, _, tf2onnx = _import_tensorflow("the Keras model")
    if not hasattr(model, "stateless_call"):
        raise LrpcError(
            f"model '{getattr(model, 'name', '?')}' is not a Keras 3 model (no stateless_call); "
            "load it with Keras 3 (keras>=3) or save it as .keras from Keras 3"
        )
    refuse_unsupported_layers(model)
    variables = list(model.trainable_variables) + list(model.non_trainable_variables)
    inputs = [tf.TensorSpec((None, *t.shape[1:]), t.dtype, name=_input_name(t, k)) for k, t in enumerate(model.inputs)]
    weights = [tf.TensorSpec(v.shape, v.dtype, name=f"lrpc_weight_{k}") for k, v in enumerate(variables)]
    outputs = _unique(list(getattr(model, "output_names", None) or [f"output_{k}" for k in range(len(model.outputs))]))
    n_trainable = len(model.trainable_variables)

    @tf.function
    def stateless(*args):
        xs, ws = args[: len(inputs)], args[len(inputs) :]
        ys, _ = model.stateless_call(
            list(ws[:n_trainable]), list(ws[n_trainable:]), xs[0] if len(xs) == 1 else list(xs), training=False
        )
        return dict(zip(outputs, tf.nest.flatten(ys)))

    recorded: dict[str, str] = {}
    with _recording_layer_scopes(tf, recorded):
        concrete = stateless.get_concrete_function(*inputs, *weights)
    input_names = [t.name for t in concrete.inputs[: len(inputs)]]
    weight_names = [t.name for t in concrete.inputs[len(inputs) :]]
    output_names = [t.name for t in concrete.outputs]
    graph_def = tf2onnx.tf_loader.from_function(concrete, input_names + weight_names, output_names)
    rewrite_for_tf2onnx(tf, graph_def)  # grouped Conv2D calls inlined, Erfc → 1 − Erf
    values = _weights_as_constants(tf, graph_def, dict(zip(weight_names, variables)))
    renames = tf2onnx.convert.tensor_names_from_structed(concrete, input_names, output_names)
    scope = _scope_map(_layer_names(model), recorded)
    proto = _convert(tf, tf2onnx, graph_def, values, input_names, output_names, renames, opset, model.name, scope)
    squeeze_after_channel_constants(proto)
    return tidy_names(proto, scope)


def refuse_unsupported_layers(model) -> None:
    """One LrpcError naming the first layer lrpc cannot explain although tf2onnx converts it: a
    MultiHeadAttention over more than one axis (`attention_axes=(1, 2)`, or the default on a grid
    [batch, H, W, d]), whose softmax over several axes Keras writes as exp(x − logsumexp(x)): no Softmax op
    for lrpc's rule, and Exp/Log have none."""
    for layer in all_layers(model):
        if type(layer).__name__ != "MultiHeadAttention":
            continue
        axes = getattr(layer, "_attention_axes", None) or layer.get_config().get("attention_axes") or ()
        if len(tuple(axes)) > 1:
            raise LrpcError(
                f"Keras layer '{layer.name}' (MultiHeadAttention) attends over {len(tuple(axes))} axes "
                f"(attention_axes={tuple(axes)}); lrpc explains attention over one axis only: reshape "
                "the input to tokens [batch, seq, d] (layers.Reshape((-1, d))) before the attention"
            )


def all_layers(model) -> list:
    """Every layer of `model`, nested models' layers included, in order."""
    found, stack = [], [model]
    while stack:
        layer = stack.pop()
        found.append(layer)
        stack.extend(reversed(getattr(layer, "layers", []) or []))
    return found


def _import_tensorflow(what):
    # TF's start-up notes would bury lrpc's one-line error: the C++ log level, and the oneDNN note, which
    # TF prints before its log level is read (lrpc only traces graphs here, no kernel runs)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    try:
        import tensorflow as tf
        import keras
        import tf2onnx
    except ImportError as e:
        raise LrpcError(
            f"{what}: reading Keras models needs TensorFlow, Keras 3 and tf2onnx ({e}); install them with: {INSTALL}"
        ) from None
    return tf, keras, tf2onnx


def _input_name(tensor, k: int) -> str:
    name = getattr(tensor, "name", "") or ""
    return name.split(":")[0] if re.fullmatch(r"[A-Za-z0-9.][A-Za-z0-9_.\-/]*(:\d+)?", name) else f"input_{k}"


def _unique(names: list[str]) -> list[str]:
    seen, out = set(), []
    for name in names:
        new, k = name, 0
        while new in seen:
            k += 1
            new = f"{name}_{k}"
        seen.add(new)
        out.append(new)
    return out


def _weights_as_constants(tf, graph_def, weights: dict) -> dict:
    """Each weight Placeholder becomes an empty Const of its dtype and shape; returns {node: bytes}."""
    values = {}
    for node in graph_def.node:
        variable = weights.get(f"{node.name}:0")
        if variable is None or node.op != "Placeholder":
            continue
        dtype = node.attr["dtype"].type
        node.op = "Const"
        node.ClearField("attr")
        node.attr["dtype"].type = dtype
        node.attr["value"].tensor.dtype = dtype
        node.attr["value"].tensor.tensor_shape.CopyFrom(tf.TensorShape(variable.shape).as_proto())
        values[node.name] = variable.numpy().tobytes()
    return values


def _convert(tf, tf2onnx, graph_def, values, input_names, output_names, renames, opset, name, scope) -> onnx.ModelProto:
    """tf2onnx's conversion and optimizers on `graph_def` with the weight bytes kept beside it; an op it
    cannot convert is one LrpcError naming the op and its Keras layer (tf2onnx's own log lines silenced)."""
    from tf2onnx import optimizer
    from tf2onnx.graph import Graph, Node
    from tf2onnx.tfonnx import process_tf_graph

    with tf.device("/cpu:0"), tf.Graph().as_default() as tf_graph, deterministic_walks(Graph):
        tf.import_graph_def(graph_def, name="")
        try:
            with quiet("tf2onnx.tfonnx"):
                g = process_tf_graph(
                    tf_graph,
                    const_node_values=values,
                    input_names=input_names,
                    output_names=output_names,
                    opset=opset,
                    tensors_to_rename=renames,
                )
        except Exception as e:  # a converter of tf2onnx's raised: the model, not lrpc, is what it cannot take
            raise LrpcError(
                f"tf2onnx {tf2onnx.__version__} failed to convert model {name} ({type(e).__name__}: "
                f"{_first_line(e)}); replace the layer it names with supported ones, or report it"
            ) from e
        values.clear()  # tf2onnx holds its own arrays now
        if found := unconverted(g.get_nodes()):
            raise LrpcError(unconverted_message(found, lambda node: _layer_of(node, scope)))
        with replacements_keep_scope(Graph), einsum_parts_keep_scope(Graph), constants_synced_once(Node):
            # catch_errors=True deep-copies the graph, weights too. merge_duplication keeps whichever of two
            # equal nodes a set yields first, so names (and bytes) would vary from run to run.
            passes = {k: v for k, v in optimizer._get_optimizers().items() if k != "merge_duplication"}
            g = optimizer.optimize_graph(g, catch_errors=False, optimizers=passes)
            drop_noop_reshapes(g)
            norm_means_as_reduce_mean(g)
        return g.make_model(f"converted from Keras model {name} by lrpc")


def _layer_of(node_name: str, scope) -> str:
    """The Keras layer a TensorFlow node belongs to: its first scope component that is not a wrapper."""
    parts = [p for p in node_name.split("/")[:-1] if not WRAPPER.fullmatch(p)] or [node_name]
    return scope(parts)[0]


def _layer_names(model) -> set[str]:
    """Every layer name of `model`, nested models' layers included."""
    return {layer.name for layer in all_layers(model)}


@contextlib.contextmanager
def _recording_layer_scopes(tf, recorded: dict):
    """While tracing, record the TensorFlow name scope each Keras layer call opens → the layer's path.
    TensorFlow makes scopes unique per trace (`conv_a` → `conv_a_1`), so a layer named `se_conv_1` beside
    a layer `se_conv` opens `se_conv_1_1` or `se_conv_1_2`, and `se_conv_1` is `se_conv`'s scope: the
    scope, not the spelling, says which layer a node is in. Keras 3's TensorFlow name_scope is private API:
    without it nothing is recorded and `_scope_map` falls back to the spelling."""
    try:
        from keras.src.backend.tensorflow.core import name_scope
        from keras.src.layers.layer import Layer
    except ImportError:
        yield
        return
    original = name_scope.__enter__

    def __enter__(self):
        result = original(self)
        if getattr(self, "_pop_on_exit", False) and isinstance(getattr(self, "caller", None), Layer):
            path = tf.get_current_name_scope()
            parent = path.rpartition("/")[0]
            recorded[path] = f"{recorded.get(parent, parent)}/{self.caller.name}".lstrip("/")
        return result

    name_scope.__enter__ = __enter__
    try:
        yield
    finally:
        name_scope.__enter__ = original


def _scope_map(layers: set[str], recorded: dict[str, str]):
    """A function renaming a node's scope parts to Keras layer paths: the longest run of parts that is a
    recorded layer scope (`_recording_layer_scopes`), else part by part `conv_a_1` → `conv_a` where
    `conv_a` is a layer."""

    def part(p: str) -> str:
        base = re.fullmatch(r"(.+)_\d+", p)
        return p if p in layers or not (base and base[1] in layers) else base[1]

    def scope(parts: list[str]) -> list[str]:
        for i in range(len(parts)):
            for j in range(len(parts), i, -1):
                layer = recorded.get("/".join(parts[i:j]))
                if layer is not None:
                    return parts[:i] + layer.split("/") + parts[j:]
        return [part(p) for p in parts]

    return scope


def _from_saved_model(tf, path: str, opset: int) -> onnx.ModelProto:
    """A SavedModel's serving signature through tf2onnx's freezing `from_function`, then the same rewrites,
    conversion and tidying as a Keras model (scopes kept as TensorFlow wrote them)."""
    import tf2onnx

    try:
        loaded = tf.saved_model.load(path)  # kept alive: the signature only references its variables
        signature = loaded.signatures["serving_default"]
    except (KeyError, OSError, ValueError) as e:
        raise LrpcError(
            f"{path}: cannot read a 'serving_default' signature from this SavedModel "
            f"({type(e).__name__}: {_first_line(e)}); export it with model.export(path)"
        ) from e
    specs = signature.structured_input_signature[1]
    names = sorted(specs)

    @tf.function
    def serve(*xs):
        return loaded.signatures["serving_default"](**dict(zip(names, xs)))

    concrete = serve.get_concrete_function(*[tf.TensorSpec(specs[n].shape, specs[n].dtype, name=n) for n in names])
    input_names = [t.name for t in concrete.inputs if t.dtype != tf.resource]
    output_names = [t.name for t in concrete.outputs if t.dtype != tf.resource]
    renames = tf2onnx.convert.tensor_names_from_structed(concrete, input_names, output_names)
    with tf.device("/cpu:0"):
        graph_def = tf2onnx.tf_loader.from_function(concrete, input_names, output_names)
    rewrite_for_tf2onnx(tf, graph_def)
    same = lambda parts: parts  # noqa: E731
    proto = _convert(tf, tf2onnx, graph_def, {}, input_names, output_names, renames, opset, path, same)
    squeeze_after_channel_constants(proto)
    return tidy_names(proto, same)


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
