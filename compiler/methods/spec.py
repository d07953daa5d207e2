"""The gradient-family methods as data, and parsing of method specs like `smoothgrad:samples=16,noise=0.1`.

With f the explained score (the selected units of the explained tensor, weighted by the selection w)
and x a model input:

    gradient              ∇f(x)
    inputxgradient        x ⊙ ∇f(x)                                              (Captum InputXGradient)
    guidedbackprop        ∇f(x) with every ReLU's backward g ↦ g ⊙ [x > 0] ⊙ [g > 0]  (Springenberg et al.)
    deconvnet             ∇f(x) with every ReLU's backward g ↦ g ⊙ [g > 0]            (Zeiler & Fergus)
    integratedgradients   (x − x₀) ⊙ 1/m Σ_{k=1..m} ∇f(x₀ + αₖ(x − x₀)),  αₖ = k/m  (Zennit; Captum riemann_right)
    smoothgrad            1/n Σ_{k=1..n} ∇f(x + εₖ),  εₖ ~ N(0, σ²),  σ = noise·(max x − min x) per sample,
                          ε_n = 0 (Zennit's SmoothGrad: the last sample is the input itself)

Parameters (defaults are Zennit's): integratedgradients steps=20 (m), baseline=0 (x₀, a scalar),
baseline_input=0|1 (1: x₀ is a graph input `baseline` shaped like x, e.g. a blurred copy of each image);
smoothgrad samples=20 (n), noise=0.1, seed=0 (RandomNormalLike's seed), noise_input=0|1 (1: the
graph takes ε itself as an input `noise` [samples, batch, …] instead of drawing it, for comparisons
with a reference on the same noise; ε is then added as given, every sample included).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import LrpcError
from ..specs import finite_number, split_spec


@dataclass(frozen=True)
class Method:
    name: str
    params: tuple  # ((name, value), ...) with defaults filled in
    relu: str = "gradient"  # how ReLUs pass the gradient back: gradient | guided | deconvnet
    times_input: bool = False  # multiply the (averaged) gradient by the input (or by x − x₀)
    path: str | None = None  # None | "integrated" | "smooth": average gradients over a batch of inputs

    @property
    def spec(self) -> str:
        args = ",".join(f"{k}={v:g}" for k, v in self.params)
        return f"{self.name}:{args}" if args else self.name

    def get(self, key, default=None):
        return dict(self.params).get(key, default)


INT, FLOAT = int, float
# name → (fixed fields, {parameter: (type, default, lower bound)}, doc)
METHOD_TABLE = {
    "gradient": ({}, {}, "∇f(x), the plain gradient of the explained score"),
    "inputxgradient": (dict(times_input=True), {}, "x ⊙ ∇f(x)"),
    "guidedbackprop": (dict(relu="guided"), {}, "gradient with ReLU backward g ⊙ [x > 0] ⊙ [g > 0]"),
    "deconvnet": (dict(relu="deconvnet"), {}, "gradient with ReLU backward g ⊙ [g > 0]"),
    "integratedgradients": (
        dict(times_input=True, path="integrated"),
        {"steps": (INT, 20, 1), "baseline": (FLOAT, 0.0, None), "baseline_input": (INT, 0, 0)},
        "(x − x₀) ⊙ mean_k ∇f(x₀ + k/m·(x − x₀)), k = 1..m (m = steps, x₀ = baseline); "
        "baseline_input=1 feeds x₀ as a graph input 'baseline' shaped like x",
    ),
    "smoothgrad": (
        dict(path="smooth"),
        {"samples": (INT, 20, 1), "noise": (FLOAT, 0.1, 0.0), "seed": (INT, 0, None), "noise_input": (INT, 0, 0)},
        "mean_k ∇f(x + ε_k), σ = noise·(max x − min x), last ε = 0; noise_input=1 feeds ε "
        "as a graph input 'noise' [samples, batch, …]",
    ),
}
FED = {"noise_input": ("noise", "seed"), "baseline_input": ("baseline",)}  # flag → the parameters it replaces
ALIASES = {
    "ig": "integratedgradients",
    "gradientxinput": "inputxgradient",
    "vanillagradient": "gradient",
    "guided": "guidedbackprop",
}


# steps and samples stack that many copies of the batch into one run: beyond this, memory, not accuracy, runs out
MOST_PASSES = 4096


def _number(name: str, key: str, text: str, kind, low) -> float | int:
    value = finite_number(text, f"method '{name}': parameter {key}")
    if key in ("steps", "samples") and value > MOST_PASSES:
        raise LrpcError(
            f"method '{name}': parameter {key} must be ≤ {MOST_PASSES} (each is one more copy of the "
            f"batch in the same run), got {value:g}"
        )
    if kind is INT and value != int(value):
        raise LrpcError(f"method '{name}': parameter {key} needs a whole number, got '{text.strip()}'")
    if low is not None and value < low:
        raise LrpcError(f"method '{name}': parameter {key} must be ≥ {low:g}, got {value:g}")
    return int(value) if kind is INT else value


def parse_method(spec: str | Method) -> Method:
    """`'gradient'`, `'integratedgradients:steps=32,baseline=0'`, `'smoothgrad:samples=16,noise=0.1,seed=0'`
    → Method. Names ignore case, '_' and '-' (`integrated_gradients` works); aliases: ig, gradientxinput."""
    if isinstance(spec, Method):
        return spec
    head, items = split_spec(str(spec))
    name = head.lower().replace("_", "").replace("-", "")
    name = ALIASES.get(name, name)
    if name not in METHOD_TABLE:
        raise LrpcError(
            f"unknown method '{spec}'; known methods: {', '.join([*METHOD_TABLE, *ALIASES])} (or lrp for the LRP rules)"
        )
    fixed, table, _ = METHOD_TABLE[name]
    given = {}
    for key, text in items:
        if key not in table:
            raise LrpcError(f"method '{name}' has no parameter '{key}' (its parameters: {', '.join(table) or 'none'})")
        if text is None:
            raise LrpcError(f"method '{name}': write parameters as {key}=VALUE")
        kind, _, low = table[key]
        given[key] = _number(name, key, text, kind, low)
    params = {k: given.get(k, default) for k, (_, default, _) in table.items()}
    for flag, replaced in FED.items():  # the spec shows only what takes effect
        if flag not in params:
            continue
        if params[flag] > 1:
            raise LrpcError(f"method '{name}': {flag} is 0 (a constant in the graph) or 1 (a graph input)")
        dropped = [key + "=" for key in replaced if key in given]
        if params[flag] and dropped:
            raise LrpcError(
                f"method '{name}': with {flag}=1 the graph takes the fed tensor as it is; "
                f"{' and '.join(dropped)} {'have' if len(dropped) > 1 else 'has'} no effect there, "
                "drop them"
            )
        for key in replaced if params[flag] else (flag,):
            params.pop(key, None)
    return Method(name=name, params=tuple(params.items()), **fixed)


def method_summary() -> str:
    """The methods with their default parameters, on one line (for the --method help)."""
    return ", ".join(
        name + (":" + ",".join(f"{k}={d:g}" for k, (_, d, _) in table.items()) if table else "")
        for name, (_, table, _) in METHOD_TABLE.items()
    )


def describe_methods() -> str:
    """One line per method with its parameters and defaults (for --help and the README)."""
    lines = []
    for name, (_, table, doc) in METHOD_TABLE.items():
        args = ",".join(f"{k}={d:g}" for k, (_, d, _) in table.items())
        lines.append(f"  {name + (':' + args if args else ''):<54} {doc}")
    lines.append("  aliases: " + ", ".join(f"{a} = {n}" for a, n in ALIASES.items()))
    return "\n".join(lines)
