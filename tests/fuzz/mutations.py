"""Random mutations of valid model files, for the hostile-input fuzz tests (issue 10, item 4b).

`mutated_files()` draws a valid graph (graphs.py) and applies one mutation, returning
(graph, mutation name, file bytes). The mutations, each with drawn positions and values:

    flip_bytes        1–8 bytes of the serialized file XOR-ed with random values
    truncate          the file cut at a random length
    delete_node       one node removed (its output dangles)
    dangling_input    one node input renamed to a name nothing produces
    initializer_shape an initializer's dims changed: flattened, one dim ±1 (data no longer fits), reversed
    unsupported_op    one node's op type replaced (an op without a rule, an unknown op, a control-flow op)
    negative_pads     a Conv/pool pad set negative
    opset             the default opset set beyond 26 or below 13, removed, or a custom domain added
    attribute         one attribute of a node set to a wrong value (strides 0, group 0 or 7, dilations 0,
                      kernel_shape not the weight's, auto_pad unknown, axis out of range, transB 2, …)
    dtype             the input or an initializer re-typed (int64, double, float16, string, undefined)
    ssa               a node's output renamed to another node's output (two producers of one value)
    cycle             the first node reads the last node's output
    graph_output      the graph output removed, or renamed to a dangling name
    input_shape       an input dim set to 0, to a wrong size, or the shape removed
    weight_as_input   an initializer also listed as a graph input (overridable at run time)
    ir_version        the IR version set to 0, 3 or 99
    empty_graph       every node removed
    nonfinite_weights an initializer filled with NaN or Inf
    missing_weight    a Conv/Gemm/MatMul's weight input dropped
"""

from __future__ import annotations

import numpy as np
import onnx
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from graphs import graphs

UNSUPPORTED_OPS = [
    "Erf",
    "Hardmax",
    "LRN",
    "NoSuchOp",
    "Cos",
    "Mul",
    "InstanceNormalization",
    "Loop",
    "If",
    "Einsum",
    "TopK",
    "Shape",
    "ConvInteger",
    "QLinearConv",
    "Attention",
]
WRONG_ATTRIBUTES = [
    ("strides", [0, 0]),
    ("group", 0),
    ("group", 7),
    ("dilations", [0, 0]),
    ("kernel_shape", [5, 5]),
    ("kernel_shape", [1]),
    ("auto_pad", "BOGUS"),
    ("axis", 5),
    ("transB", 2),
    ("pads", [1]),
    ("alpha", float("nan")),
    ("ceil_mode", 3),
    ("count_include_pad", -1),
    ("storage_order", 1),
]
DTYPES = [
    TensorProto.INT64,
    TensorProto.DOUBLE,
    TensorProto.FLOAT16,
    TensorProto.STRING,
    TensorProto.UNDEFINED,
    TensorProto.BFLOAT16,
]


def _pick(draw, items):
    return items[draw(st.integers(0, len(items) - 1))] if items else None


def flip_bytes(draw, m: onnx.ModelProto) -> bytes:
    data = bytearray(m.SerializeToString())
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
    return bytes(data)


def truncate(draw, m):
    data = m.SerializeToString()
    return data[: draw(st.integers(0, len(data) - 1))]


def delete_node(draw, m):
    del m.graph.node[draw(st.integers(0, len(m.graph.node) - 1))]


def dangling_input(draw, m):
    node = _pick(draw, list(m.graph.node))
    node.input[draw(st.integers(0, len(node.input) - 1))] = "nowhere"


def initializer_shape(draw, m):
    init = _pick(draw, list(m.graph.initializer))
    dims = list(init.dims)
    how = draw(st.sampled_from(["flatten", "grow", "shrink", "reverse"]))
    if how == "flatten":
        dims = [int(np.prod(dims))]
    elif how in ("grow", "shrink"):
        i = draw(st.integers(0, len(dims) - 1))
        dims[i] = max(dims[i] + (1 if how == "grow" else -1), 0)
    else:
        dims = dims[::-1]
    del init.dims[:]
    init.dims.extend(dims)


def unsupported_op(draw, m):
    _pick(draw, list(m.graph.node)).op_type = draw(st.sampled_from(UNSUPPORTED_OPS))


def negative_pads(draw, m):
    padded = [n for n in m.graph.node if any(a.name == "pads" for a in n.attribute)]
    if not padded:
        return attribute(draw, m)
    node = _pick(draw, padded)
    attr = next(a for a in node.attribute if a.name == "pads")
    attr.ints[draw(st.integers(0, len(attr.ints) - 1))] = -draw(st.integers(1, 3))


def opset(draw, m):
    how = draw(st.sampled_from(["new", "old", "none", "custom"]))
    if how == "none":
        del m.opset_import[:]
        return
    if how == "custom":
        m.opset_import.append(helper.make_opsetid("com.example", 1))
        _pick(draw, list(m.graph.node)).domain = "com.example"
        return
    m.opset_import[0].version = draw(st.integers(27, 40) if how == "new" else st.integers(1, 12))


def attribute(draw, m):
    node = _pick(draw, list(m.graph.node))
    name, value = draw(st.sampled_from(WRONG_ATTRIBUTES))
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(kept + [helper.make_attribute(name, value)])


def dtype(draw, m):
    new = draw(st.sampled_from(DTYPES))
    if draw(st.booleans()) or not m.graph.initializer:
        m.graph.input[0].type.tensor_type.elem_type = new
        return
    init = _pick(draw, list(m.graph.initializer))
    init.data_type = new  # raw_data keeps its float32 bytes


def ssa(draw, m):
    if len(m.graph.node) < 2:
        return delete_node(draw, m)
    i, j = draw(st.lists(st.integers(0, len(m.graph.node) - 1), min_size=2, max_size=2, unique=True))
    m.graph.node[i].output[0] = m.graph.node[j].output[0]


def cycle(draw, m):
    m.graph.node[0].input[0] = m.graph.node[-1].output[0]


def graph_output(draw, m):
    if draw(st.booleans()):
        del m.graph.output[:]
    else:
        m.graph.output[0].name = "nowhere"


def input_shape(draw, m):
    shape = m.graph.input[0].type.tensor_type.shape
    if draw(st.booleans()):
        m.graph.input[0].type.tensor_type.ClearField("shape")
        return
    dim = shape.dim[draw(st.integers(0, len(shape.dim) - 1))]
    dim.dim_value = draw(st.sampled_from([0, 1, 2, 5, 13]))


def weight_as_input(draw, m):
    init = _pick(draw, list(m.graph.initializer))
    m.graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))


def ir_version(draw, m):
    m.ir_version = draw(st.sampled_from([0, 3, 99]))


def empty_graph(draw, m):
    del m.graph.node[:]


def nonfinite_weights(draw, m):
    init = _pick(draw, [i for i in m.graph.initializer if i.data_type == TensorProto.FLOAT])
    array = numpy_helper.to_array(init).copy()
    array.reshape(-1)[draw(st.integers(0, array.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    init.CopyFrom(numpy_helper.from_array(array, init.name))


def missing_weight(draw, m):
    layers = [n for n in m.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    node = _pick(draw, layers)
    del node.input[1:]


MUTATIONS = {
    f.__name__: f
    for f in [
        flip_bytes,
        truncate,
        delete_node,
        dangling_input,
        initializer_shape,
        unsupported_op,
        negative_pads,
        opset,
        attribute,
        dtype,
        ssa,
        cycle,
        graph_output,
        input_shape,
        weight_as_input,
        ir_version,
        empty_graph,
        nonfinite_weights,
        missing_weight,
    ]
}


@st.composite
def mutated_files(draw, kinds=tuple(MUTATIONS)):
    """(the valid graph, the mutation's name, the mutated file's bytes)."""
    graph = draw(graphs(max_blocks=2))
    kind = draw(st.sampled_from(kinds))
    model = onnx.ModelProto()
    model.CopyFrom(graph.model)
    data = MUTATIONS[kind](draw, model)
    return graph, kind, data if isinstance(data, bytes) else model.SerializeToString()
