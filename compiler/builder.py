"""The builder lowering functions use: new nodes go into the graph, named after the forward node.

Weights and their transforms are built as ops on the model's initializers (W⁺ = Relu(W), …), so the
file stays the size of the model and onnxruntime folds them once when the session is created.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx_ir as ir


class Builder:
    def __init__(self, graph: ir.Graph, dtype: ir.DataType):
        self.graph = graph
        self.dtype = dtype  # float type of the relevance computation (the model's activations)
        self.scope = "lrp"
        self._count = 0
        self._cache: dict = {}
        self._nodes: list[ir.Node] = []
        self.taken = (
            {v.name for v in graph.inputs} | set(graph.initializers) | {v.name for node in graph for v in node.outputs}
        )  # a model may name its own tensors lrp/…

    def fresh_name(self, stem: str) -> str:
        """`stem_N` with the next count that no tensor of the model or of this builder has."""
        while True:
            self._count += 1
            name = f"{stem}_{self._count}"
            if name not in self.taken:
                self.taken.add(name)
                return name

    def op(self, op_type: str, *inputs: ir.Value | None, **attributes) -> ir.Value:
        """Append one node with a single output and return that output."""
        return self.op_multi(op_type, *inputs, num_outputs=1, **attributes)[0]

    def op_multi(self, op_type: str, *inputs, num_outputs: int, **attributes) -> list[ir.Value]:
        name = self.fresh_name(f"{self.scope}/{op_type}")
        node = ir.Node(
            "",
            op_type,
            list(inputs),
            attributes=ir.convenience.convert_attributes(attributes),
            num_outputs=num_outputs,
            name=name,
        )
        for i, value in enumerate(node.outputs):
            value.name = name if num_outputs == 1 else f"{name}:{i}"
        self.graph.append(node)
        self._nodes.append(node)
        return list(node.outputs)

    @property
    def added(self) -> list[ir.Node]:
        """The nodes this builder added (the explanation's), in order."""
        return list(self._nodes)

    def drop_unused(self) -> int:
        """Remove the nodes this builder added whose outputs nothing reads (a stand-in a rule did not
        need, …), last first so that chains go too, and the constants it added that nothing reads then;
        returns how many nodes. onnxruntime would run them (MobileNetV2 under EpsilonPlusFlat: 35 unread
        Relu(z), 47 ms of 790 at batch 16, each keeping its z alive)."""
        dropped = 0
        for node in reversed(self._nodes):
            if node.graph is self.graph and not any(v.uses() or v.is_graph_output() for v in node.outputs):
                self.graph.remove(node, safe=True)
                dropped += 1
        self._nodes = [n for n in self._nodes if n.graph is self.graph]
        for key, value in list(self._cache.items()):
            if key[0] == "const" and not value.uses() and value.name in self.graph.initializers:
                del self.graph.initializers[value.name]
                del self._cache[key]
        return dropped

    def const(self, array, dtype=None) -> ir.Value:
        """A constant initializer (floats in the model's dtype unless `dtype` says otherwise)."""
        array = np.asarray(array, dtype=dtype or self.dtype.numpy())
        key = ("const", array.dtype.str, array.shape, array.tobytes())
        if key not in self._cache:
            name = self.fresh_name(f"{self.scope}/const")
            value = ir.Value(
                name=name,
                shape=ir.Shape(array.shape),
                type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
                const_value=ir.tensor(array, name=name),
            )
            self.graph.register_initializer(value)
            self._cache[key] = value
        return self._cache[key]

    def cached(self, key, make):
        """Build once per key (a weight transform shared by several terms)."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def divide(self, r: ir.Value, z: ir.Value, eps: float) -> ir.Value:
        """R / stab(z) with stab(z) = z + ε·sign₀(z); for ε = 0, R / z with 0 where z = 0. Relevance handed
        down as R = z ⊙ c gets c ⊙ |z| / (|z| + ε), no sign test (z + ε·sign₀(z) = sign₀(z)(|z| + ε))."""
        if eps == 0.0:  # z + [z = 0] is 1 where z = 0; those quotients are then masked to 0 (a Mul: a
            # Where with a tensor operand is 3× slower in onnxruntime)
            is_zero = self.op("Cast", self.op("Equal", z, self.const(0.0)), to=self.dtype)
            quotient = self.op("Div", r, self.op("Add", z, is_zero))
            return self.op("Mul", quotient, self.op("Sub", self.const(1.0), is_zero))
        c = cofactor(r, z)
        if c is not None:
            magnitude = self.op("Abs", z)
            return self.op("Mul", c, self.op("Div", magnitude, self.op("Add", magnitude, self.const(eps))))
        return self.op("Div", r, self.op("Add", z, self.sign_shift(z, eps)))

    def sign_shift(self, z: ir.Value, eps: float) -> ir.Value:
        """ε·sign₀(z) as Clip(z·K + ε, −ε, ε), K a power of two that takes the smallest subnormal to ≥ 2ε.

        Every z ≠ 0 then saturates to ±ε and z = 0 gives +ε: bit for bit Where(z ≥ 0, ε, −ε), in float
        passes onnxruntime vectorises (its Where with a bool mask costs ~5× an Add: benchmarks/PROFILE.md §9).
        Where K does not fit the model's float type (ε = 1e-6 in float32 needs 2¹³²), K = K₁·K₂ and the
        second factor scales the clipped value instead, Clip(z·K₁ + ε/K₂, −ε/K₂, ε/K₂)·K₂ — exact, since
        K₂ is a power of two — so no two constants stand next to each other: TensorFlow's Grappler folded
        z·2¹²⁷·2⁵ into z·inf, NaN at z = 0, in the SavedModel.
        """
        info = ml_dtypes.finfo(self.dtype.numpy())
        eps = float(np.asarray(eps, dtype=self.dtype.numpy()))  # the ε the graph holds
        exponent = 1 + int(np.ceil(np.log2(2 * eps) - np.log2(float(info.smallest_subnormal))))  # 1: margin
        first = min(exponent, info.maxexp - 1)
        after = exponent - first  # the factor applied after the clip (0: none)
        bound = eps / 2.0**after
        if after and (after > info.maxexp - 1 or bound < float(info.tiny)):  # ε/K₂ must stay exact
            raise ValueError(f"ε = {eps:g} cannot be stabilised exactly in {self.dtype}")
        shifted = self.op("Add", self.op("Mul", z, self.const(2.0**first)), self.const(bound))
        clipped = self.op("Clip", shifted, self.const(-bound), self.const(bound))
        return clipped if after == 0 else self.op("Mul", clipped, self.const(2.0**after))

    def positive_mask(self, v: ir.Value) -> ir.Value:
        """[v > 0] as a float, Clip(v·K₁, 0, 1/K₂)·K₂ with K₁K₂ taking the smallest subnormal to 2.

        Every v > 0 saturates to 1 and v ≤ 0 gives 0 (NaN stays NaN): the ReLU's derivative as passes
        onnxruntime keeps in its blocked layout, where Where(v > 0, g, 0) costs ~5× a Mul
        (benchmarks/PROFILE.md §9, §12). The two powers of two stand apart, as in sign_shift.
        """
        info = ml_dtypes.finfo(self.dtype.numpy())
        first = info.maxexp - 1
        after = 1 - int(np.log2(float(info.smallest_subnormal))) - first  # 1/K₂ ≥ tiny: exact
        clipped = self.op("Clip", self.op("Mul", v, self.const(2.0**first)), self.const(0.0), self.const(2.0**-after))
        return self.op("Mul", clipped, self.const(2.0**after))

    def add_all(self, values: list[ir.Value]) -> ir.Value:
        total = values[0]
        for v in values[1:]:
            total = self.op("Add", total, v)
        return total

    def scale(self, value: ir.Value, factor: float) -> ir.Value:
        return value if factor == 1.0 else self.op("Mul", value, self.const(factor))


def cofactor(r: ir.Value, z: ir.Value) -> ir.Value | None:
    """c where r = Mul(z, c) or Mul(c, z) — relevance handed down as z ⊙ c by the rule above (a join's
    share, a layer's x ⊙ Wᵀs) — else None. Then no sign test is needed for its quotient (Builder.divide):
    ResNet's and MobileNet's signed conv outputs that feed a join or the next conv directly; and no mask for
    a gated rule's R·[z ≷ 0] = c ⊙ z^± (rules/linear.py)."""
    node = r.producer()
    if node is None or node.op_type != "Mul" or node.domain not in ("", "ai.onnx"):
        return None
    first, second = node.inputs
    return second if first is z else first if second is z else None
