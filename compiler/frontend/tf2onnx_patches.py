"""tf2onnx patched while it converts a Keras graph (frontend/keras.py), each for the duration of a block:

- `deterministic_walks`: its walks over sets in a fixed order, so one model gives the same ONNX bytes in any
  process;
- `quiet`: its error line per unconverted op silenced (lrpc says it once);
- `constants_synced_once`: a Const's protobuf rewritten once, at the end, not after every optimizer pass;
- `replacements_keep_scope`, `einsum_parts_keep_scope`: nodes it creates without a name named in the Keras
  layer's scope of the node they replace or decompose.
"""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def deterministic_walks(graph_cls):
    """tf2onnx walks two unordered collections while it rewrites and optimizes, so the same model converted
    to structurally different graphs from run to run (MobileNetV3Small: a Flatten's shape computed at run
    time in one run, folded into a constant in the next; ResNet50: other node orders), even under one
    PYTHONHASHSEED: each value's consumers, a set of node names (string-hash order), and the nodes kept by
    `delete_unused_nodes`, a set of Node objects (memory-address order) that becomes the node list the
    optimizers then loop over. Both come in a fixed order instead: consumers sorted by name, kept nodes in
    their current list order."""
    consumers, extract = graph_cls.find_output_consumers, graph_cls.extract_sub_graph_nodes

    def find_output_consumers(self, output_name):
        return sorted(consumers(self, output_name), key=lambda node: node.name)

    def extract_sub_graph_nodes(self, *args, **kwargs):
        keep = set(extract(self, *args, **kwargs))
        return [node for node in self.get_nodes() if node in keep]

    graph_cls.find_output_consumers, graph_cls.extract_sub_graph_nodes = find_output_consumers, extract_sub_graph_nodes
    try:
        yield
    finally:
        graph_cls.find_output_consumers, graph_cls.extract_sub_graph_nodes = consumers, extract


@contextlib.contextmanager
def quiet(logger_name: str):
    """tf2onnx logs each op it cannot convert as an error line; lrpc says it once, itself."""
    import logging

    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def constants_synced_once(node_cls):
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
def replacements_keep_scope(graph_cls):
    """While tf2onnx optimizes: a node it creates without a name, with the op type and first two inputs
    of an existing node (the one it replaces, e.g. a Conv with the following Add as bias), is named in
    that node's scope instead of a bare `Conv__17`."""
    original = graph_cls.make_node

    def make_node(self, op_type, inputs, *args, name=None, **kwargs):
        if name is None and kwargs.get("op_name_scope") is None and len(inputs) >= 2:
            twin = next(
                (
                    n
                    for n in self.get_nodes()
                    if n.type == op_type and list(n.input[:2]) == list(inputs[:2]) and "/" in n.name
                ),
                None,
            )
            if twin is not None:
                name = f"{twin.name.rsplit('/', 1)[0]}/{fresh(op_type)}"
        return original(self, op_type, inputs, *args, name=name, **kwargs)

    graph_cls.make_node = make_node
    try:
        yield
    finally:
        graph_cls.make_node = original


@contextlib.contextmanager
def einsum_parts_keep_scope(graph_cls):
    """While tf2onnx's einsum optimizer decomposes an Einsum (Keras' EinsumDense projections and
    MultiHeadAttention's q·kᵀ and A·v) into MatMul, Gemm, Transpose and Reshape nodes, each node it makes
    without a name is named in the Einsum's scope (`b0_mha/query/einsum/Gemm__3`, not a bare `Gemm__3`),
    so rule maps, `--explain` and errors see the Keras layer."""
    from tf2onnx.optimizer.einsum_optimizer import EinsumOptimizer

    original_make, original_optimize = graph_cls.make_node, EinsumOptimizer._optimize_einsum
    current: list[str] = []

    def make_node(self, op_type, inputs, *args, name=None, **kwargs):
        if name is None and current and kwargs.get("op_name_scope") is None:
            name = f"{current[-1]}/{fresh(op_type)}"
        return original_make(self, op_type, inputs, *args, name=name, **kwargs)

    def optimize_einsum(self, node, graph):
        current.append(node.name.rsplit("/", 1)[0] if "/" in node.name else node.name)
        try:
            return original_optimize(self, node, graph)
        finally:
            current.pop()

    graph_cls.make_node, EinsumOptimizer._optimize_einsum = make_node, optimize_einsum
    try:
        yield
    finally:
        graph_cls.make_node, EinsumOptimizer._optimize_einsum = original_make, original_optimize


def fresh(op_type: str) -> str:
    from tf2onnx import utils

    return utils.make_name(op_type)
