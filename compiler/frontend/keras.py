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
   model's layer: `backbone/conv_a/BiasAdd`). A node tf2onnx creates to replace another (a Conv with
   its bias folded in) keeps the replaced node's scope. tf2onnx's counters (`Transpose__17`) are
   renumbered in graph order, so the same model always gives the same ONNX bytes.

Grappler does not see the weights, so it cannot fold a BatchNormalization into the Conv before it
under the BN's name: the Conv keeps its own layer's name and lrpc's canonization folds the BN.
A channels-last model keeps its channels-last input; the relevance map has the input's shape.

A SavedModel folder (`saved_model.pb` inside) has no Keras layers to trace without state: its
`serving_default` signature goes through tf2onnx's `from_function` (freezing, with its memory cost),
and node names keep TensorFlow's scopes minus the signature wrappers (`conv_a_1/BiasAdd`; rule maps
and `--explain` accept `conv_a` for it).
"""

from __future__ import annotations

import contextlib
import os
import re

import numpy as np
import onnx

from ..errors import LrpcError

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
OPSET = 17
INSTALL = 'pip install "lrpc[keras]"'
_COUNTER = re.compile(r"__(\d+)")
_WRAPPER = re.compile(r"(Stateful)?PartitionedCall(_\d+)?")


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
        raise LrpcError(f"{path}: Keras cannot load it ({type(e).__name__}: {_first_line(e)}); "
                        "lrpc reads models saved by model.save('model.keras') or '.h5'") from e
    return from_keras_model(model, opset)


def from_keras_model(model, opset: int = OPSET) -> onnx.ModelProto:
    """A built Keras 3 model → ONNX: weights as constants, dynamic batch, Keras layer names."""
    tf, _, tf2onnx = _import_tensorflow("the Keras model")
    if not hasattr(model, "stateless_call"):
        raise LrpcError(f"model '{getattr(model, 'name', '?')}' is not a Keras 3 model (no stateless_call); "
                        "load it with Keras 3 (keras>=3) or save it as .keras from Keras 3")
    variables = list(model.trainable_variables) + list(model.non_trainable_variables)
    inputs = [tf.TensorSpec((None, *t.shape[1:]), t.dtype, name=_input_name(t, k))
              for k, t in enumerate(model.inputs)]
    weights = [tf.TensorSpec(v.shape, v.dtype, name=f"lrpc_weight_{k}") for k, v in enumerate(variables)]
    outputs = _unique(list(getattr(model, "output_names", None) or [f"output_{k}" for k in range(len(model.outputs))]))
    n_trainable = len(model.trainable_variables)

    @tf.function
    def stateless(*args):
        xs, ws = args[:len(inputs)], args[len(inputs):]
        ys, _ = model.stateless_call(list(ws[:n_trainable]), list(ws[n_trainable:]),
                                     xs[0] if len(xs) == 1 else list(xs), training=False)
        return dict(zip(outputs, tf.nest.flatten(ys)))

    concrete = stateless.get_concrete_function(*inputs, *weights)
    input_names = [t.name for t in concrete.inputs[:len(inputs)]]
    weight_names = [t.name for t in concrete.inputs[len(inputs):]]
    output_names = [t.name for t in concrete.outputs]
    graph_def = tf2onnx.tf_loader.from_function(concrete, input_names + weight_names, output_names)
    values = _weights_as_constants(tf, graph_def, dict(zip(weight_names, variables)))
    renames = tf2onnx.convert.tensor_names_from_structed(concrete, input_names, output_names)
    proto = _convert(tf, tf2onnx, graph_def, values, input_names, output_names, renames, opset, model.name)
    _squeeze_after_channel_constants(proto)
    return _tidy_names(proto, _scope_map(proto, _layer_names(model)))


def _squeeze_after_channel_constants(proto: onnx.ModelProto) -> None:
    """`Squeeze(x) ∘ (Add|Mul|Sub|Div by c)` → `(… by c') ∘ Squeeze`, c' = c with the squeezed axes put back.

    tf2onnx writes Conv1D as Unsqueeze → Conv (2-D) → Squeeze, and the layer's bias and a following
    BatchNormalization as constant Add/Mul after the Squeeze, where canonization sees no Conv to fold
    them into (a bias left outside its layer stays with its unit under every rule, unlike z = Wx + b).
    Moving the Squeeze below them puts the constants right after the Conv; op(squeeze(x), c) equals
    squeeze(op(x, c')) because c' has size 1 on the squeezed axes."""
    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    moved = True
    while moved:
        moved = False
        consumers = {}
        for node in graph.node:
            for v in node.input:
                consumers.setdefault(v, []).append(node)
        for i, squeeze in enumerate(graph.node):
            if squeeze.op_type != "Squeeze" or len(consumers.get(squeeze.output[0], [])) != 1:
                continue
            op = consumers[squeeze.output[0]][0]
            axes = _squeezed_axes(squeeze, inits)
            const = op.input[1] if len(op.input) == 2 and op.input[0] == squeeze.output[0] else None
            if op.op_type not in ("Add", "Mul", "Sub", "Div") or axes is None or const not in inits \
                    or squeeze.output[0] in {o.name for o in graph.output}:
                continue
            c = onnx.numpy_helper.to_array(inits[const])
            rank = _rank_of(squeeze.input[0], graph, inits)
            if rank is None or c.ndim > rank - len(axes):
                continue
            axes = sorted(a % rank for a in axes)
            c = np.expand_dims(c.reshape((1,) * (rank - len(axes) - c.ndim) + c.shape), axes)
            name = f"{const}/unsqueezed"
            graph.initializer.append(onnx.numpy_helper.from_array(c, name))
            inits[name] = graph.initializer[-1]
            inner, outer = squeeze.output[0], op.output[0]
            op.input[:] = [squeeze.input[0], name]
            op.output[:] = [inner]
            squeeze.input[0], squeeze.output[0] = inner, outer
            j = list(graph.node).index(op)
            first, second = onnx.NodeProto(), onnx.NodeProto()
            first.CopyFrom(op)
            second.CopyFrom(squeeze)
            graph.node[i].CopyFrom(first)  # the constant op takes the Squeeze's place, the Squeeze its
            graph.node[j].CopyFrom(second)
            moved = True
            break


def _squeezed_axes(squeeze, inits) -> list[int] | None:
    if len(squeeze.input) > 1 and squeeze.input[1] in inits:
        return sorted(int(a) for a in onnx.numpy_helper.to_array(inits[squeeze.input[1]]))
    attr = next((a for a in squeeze.attribute if a.name == "axes"), None)
    return sorted(attr.ints) if attr is not None and len(squeeze.input) == 1 else None


def _rank_of(name: str, graph, inits) -> int | None:
    """The rank of a Conv's output (its weight's rank), also through constant Add/Mul/Sub/Div after it;
    None for anything else."""
    producer = next((n for n in graph.node if name in n.output), None)
    while producer is not None and producer.op_type in ("Add", "Mul", "Sub", "Div") and producer.input[1] in inits:
        producer = next((n for n in graph.node if producer.input[0] in n.output), None)
    if producer is None or producer.op_type not in ("Conv", "ConvTranspose") or producer.input[1] not in inits:
        return None
    return len(inits[producer.input[1]].dims)


def _import_tensorflow(what):
    try:
        import tensorflow as tf
        import keras
        import tf2onnx
    except ImportError as e:
        raise LrpcError(f"{what}: reading Keras models needs TensorFlow, Keras 3 and tf2onnx ({e}); "
                        f'install them with: {INSTALL}') from None
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


def _convert(tf, tf2onnx, graph_def, values, input_names, output_names, renames, opset, name) -> onnx.ModelProto:
    """tf2onnx's conversion and optimizers on `graph_def` with the weight bytes kept beside it."""
    from tf2onnx import optimizer
    from tf2onnx.graph import Graph, Node
    from tf2onnx.tfonnx import process_tf_graph

    with tf.device("/cpu:0"), tf.Graph().as_default() as tf_graph:
        tf.import_graph_def(graph_def, name="")
        g = process_tf_graph(tf_graph, const_node_values=values, input_names=input_names,
                             output_names=output_names, opset=opset, tensors_to_rename=renames)
        values.clear()  # tf2onnx holds its own arrays now
        with _replacements_keep_scope(Graph), _constants_synced_once(Node):
            # catch_errors=True deep-copies the graph, weights too. merge_duplication keeps whichever of two
            # equal nodes a set yields first, so names (and bytes) would vary from run to run.
            passes = {k: v for k, v in optimizer._get_optimizers().items() if k != "merge_duplication"}
            g = optimizer.optimize_graph(g, catch_errors=False, optimizers=passes)
        return g.make_model(f"converted from Keras model {name} by lrpc")


@contextlib.contextmanager
def _constants_synced_once(node_cls):
    """While tf2onnx optimizes, a Const node's protobuf is not rewritten from its attributes: every
    optimizer ends with `update_proto`, which appends each weight anew to the node's protobuf arena
    without freeing the old copy (VGG-16: +0.5 GB per optimizer pass, past 6 GB). `make_model` syncs
    the final values once."""
    original = node_cls.update_proto

    def update_proto(self, external_tensor_storage=None):
        if self.type != "Const":
            original(self, external_tensor_storage)

    node_cls.update_proto = update_proto
    try:
        yield
    finally:
        node_cls.update_proto = original


@contextlib.contextmanager
def _replacements_keep_scope(graph_cls):
    """While tf2onnx optimizes: a node it creates without a name, with the op type and first two inputs
    of an existing node (the one it replaces, e.g. a Conv with the following Add as bias), is named in
    that node's scope instead of a bare `Conv__17`."""
    original = graph_cls.make_node

    def make_node(self, op_type, inputs, *args, name=None, **kwargs):
        if name is None and kwargs.get("op_name_scope") is None and len(inputs) >= 2:
            twin = next((n for n in self.get_nodes() if n.type == op_type and list(n.input[:2]) == list(inputs[:2])
                         and "/" in n.name), None)
            if twin is not None:
                name = f"{twin.name.rsplit('/', 1)[0]}/{_fresh(op_type)}"
        return original(self, op_type, inputs, *args, name=name, **kwargs)

    graph_cls.make_node = make_node
    try:
        yield
    finally:
        graph_cls.make_node = original


def _fresh(op_type: str) -> str:
    from tf2onnx import utils
    return utils.make_name(op_type)


def _layer_names(model) -> set[str]:
    """Every layer name of `model`, nested models' layers included."""
    names, stack = set(), [model]
    while stack:
        layer = stack.pop()
        names.add(layer.name)
        stack.extend(getattr(layer, "layers", []) or [])
    return names


def _scope_map(proto: onnx.ModelProto, layers: set[str]):
    """A function mapping one scope component: `conv_a_1` → `conv_a` where `conv_a` is a layer."""
    def scope(part: str) -> str:
        if part in layers:
            return part
        base = re.fullmatch(r"(.+)_\d+", part)
        return base[1] if base and base[1] in layers else part
    return scope


def _tidy_names(proto: onnx.ModelProto, scope) -> onnx.ModelProto:
    """Rename nodes and values (graph inputs and outputs kept): scope components by `scope`, leading
    signature wrappers dropped, tf2onnx's `__N` counters renumbered in graph order. Initializers are
    named after their first use (`conv_a/BiasAdd/in1`: that node's input 1) and stored in that order:
    tf2onnx merges equal constants under whichever name a set yields first. A new name that is taken
    already keeps the old one."""
    graph = proto.graph
    counters: dict[str, str] = {}

    def renamed(name: str) -> str:
        parts = name.split("/")
        while len(parts) > 1 and _WRAPPER.fullmatch(parts[0]):
            parts = parts[1:]
        name = "/".join([scope(p) for p in parts[:-1]] + parts[-1:])
        return _COUNTER.sub(lambda m: "__" + counters.setdefault(m[1], str(len(counters))), name)

    fixed = {v.name for v in (*graph.input, *graph.output)}
    nodes = _renaming([node.name for node in graph.node], renamed, set())
    constants = {t.name for t in graph.initializer}
    uses = {}
    for node in graph.node:
        for slot, v in enumerate(node.input):
            if v in constants:
                uses.setdefault(v, f"{nodes.get(node.name, node.name)}/in{slot}")
    values = _renaming([n for node in graph.node for n in node.output], renamed, fixed | set(uses.values()))
    values.update({old: new for old, new in uses.items() if old not in fixed})
    order = {name: k for k, name in enumerate(uses)}
    graph.initializer.sort(key=lambda t: order.get(t.name, len(order)))  # in place: no copy of the weights
    del graph.initializer[len(order):]  # constants no node reads (e.g. replaced by _squeeze_after_…)
    for node in graph.node:
        node.name = nodes.get(node.name, node.name)
        node.input[:] = [values.get(n, n) for n in node.input]
        node.output[:] = [values.get(n, n) for n in node.output]
    for item in (*graph.initializer, *graph.value_info):
        item.name = values.get(item.name, item.name)
    for info in (*graph.input, *graph.output, *graph.value_info):  # symbolic dims: unk__99 → unk__0
        for axis, dim in enumerate(info.type.tensor_type.shape.dim):
            if dim.HasField("dim_param"):
                dim.dim_param = "batch" if axis == 0 else renamed(dim.dim_param)
    return proto


def _renaming(names: list[str], renamed, fixed: set[str]) -> dict[str, str]:
    """{old: new} for the distinct non-empty `names` in order, never onto a taken or `fixed` name."""
    taken, mapping = set(fixed), {}
    for name in dict.fromkeys(n for n in names if n and n not in fixed):
        new = renamed(name)
        mapping[name] = new if new not in taken else name
        taken.add(mapping[name])
    return mapping


def _from_saved_model(tf, path: str, opset: int) -> onnx.ModelProto:
    """A SavedModel's serving signature through tf2onnx's from_function (variables frozen)."""
    from tf2onnx import convert
    try:
        loaded = tf.saved_model.load(path)  # kept alive: the signature only references its variables
        signature = loaded.signatures["serving_default"]
    except (KeyError, OSError, ValueError) as e:
        raise LrpcError(f"{path}: cannot read a 'serving_default' signature from this SavedModel "
                        f"({type(e).__name__}: {_first_line(e)}); export it with model.export(path)") from e
    specs = signature.structured_input_signature[1]
    names = sorted(specs)

    @tf.function
    def serve(*xs):
        return loaded.signatures["serving_default"](**dict(zip(names, xs)))

    proto, _ = convert.from_function(serve, input_signature=[tf.TensorSpec(specs[n].shape, specs[n].dtype, name=n)
                                                             for n in names], opset=opset)
    return _tidy_names(proto, lambda part: part)


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
