"""The gradient family, compiled like the LRP rules: gradient, input×gradient, guided backprop,
deconvnet, integrated gradients and smoothgrad as plain ONNX graphs.

    method = parse_method("integratedgradients:steps=32,baseline=0")
    attributions = lower_method(graph, start, seed, method, b, inputs)   # {input: value}

spec.py holds the methods and their formulas, table.py the backward rules (g_in = Jᵀ g_out, one per
op, beside the LRP rules they reuse), backward.py the reverse walk, lower.py the batched forward
copies that integrated gradients and smoothgrad average over.
"""

from .lower import NOISE_INPUT_NAME, lower_method  # noqa: F401
from .spec import METHOD_TABLE, Method, describe_methods, method_summary, parse_method  # noqa: F401
from .table import GRADIENTS, supported_gradient_ops  # noqa: F401
