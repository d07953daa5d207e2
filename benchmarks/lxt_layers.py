"""Where lrpc and LXT part: the relevance each conv/linear passes to its input, layer by layer.

    python benchmarks/lxt_layers.py seresnext26d_32x4d --sample 1            # lrpc float32 vs LXT float64
    python benchmarks/lxt_layers.py convnext_atto --eps 1e-9 --double        # lrpc float64 vs LXT float64

For a conv or linear layer with input T, the relevance it sends to T (before fan-out sums):
* LXT: T ⊙ ∂(target logit)/∂T through that module alone (a full backward hook's grad_input);
* lrpc: its rule's last node, `Mul(T, ·)`, named `lrp/<node name>/Mul_k` in the explained graph,
  added as a graph output (`onnx_name` gives the exporter's name of a module's node).
Printed from the output back to the input, with the relative L2 of each layer and |z|-statistics of
its output (the smallest |z|: LRP divides by it, and ε or float32 round-off moves R/z there).
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lxt_ref  # noqa: E402
from double_ops import run_double  # noqa: E402


def onnx_name(module_path: str, op: str) -> str:
    """The TorchScript exporter's node name: one scope per module, a numbered child (of a Sequential or
    ModuleList) named after its parent's scope, e.g. `stages.0.blocks.1.conv_dw` → /stages/stages.0/
    blocks/blocks.1/conv_dw/Conv."""
    scopes = []
    for part in module_path.split("."):
        scopes.append(f"{scopes[-1]}.{part}" if part.isdigit() and scopes else part)
    return "/" + "/".join(scopes) + "/" + op


def lrpc_layer_relevance(explained: onnx.ModelProto, x: np.ndarray, double: bool) -> dict[str, np.ndarray]:
    """{forward node name: the relevance its rule sends to its first input} from the explained graph."""
    taps = {}
    forward = {n.name: n for n in explained.graph.node if not n.name.startswith("lrp/")}
    for node in explained.graph.node:
        owner = node.name[4:].rsplit("/", 1)[0] if node.name.startswith("lrp/") else None
        if node.op_type == "Mul" and owner in forward and node.input[0] == forward[owner].input[0]:
            taps[owner] = node.output[0]
    model = onnx.ModelProto()
    model.CopyFrom(explained)
    model.graph.output.extend(
        onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in taps.values()
    )
    if double:
        values = run_double(model, {"input": x}, list(taps.values()))
    else:
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        values = dict(zip(taps.values(), session.run(list(taps.values()), {"input": x})))
    return {name: values[t] for name, t in taps.items()}


def _keep(module, args, out, name, z):  # a forward hook: keep the input, record |z| (returns None)
    module._in = args[0]
    z[name] = out.detach().abs()


def lxt_layer_relevance(model: nn.Module, x: np.ndarray, target, product: str):
    """{onnx node name: T ⊙ grad through the module} and {name: |z| of its output} for each conv/linear."""
    view = lxt_ref.lxt_view(model, product)
    relevance, z = {}, {}
    for path, module in view.named_modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            name = onnx_name(path, "Gemm" if isinstance(module, nn.Linear) else "Conv")
            module.register_forward_hook(functools.partial(_keep, name=name, z=z))
            module.register_full_backward_hook(
                lambda m, gin, gout, name=name: relevance.__setitem__(name, (m._in * gin[0]).detach())
            )
    lxt_ref.lxt_relevance(view, x, target)
    return relevance, z


def main(argv=None) -> int:
    import modern_zoo

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a timm name of benchmarks/modern_zoo.py's list (its first entry of that name)")
    parser.add_argument("--sample", type=int, default=0, help="which of the zoo's 4 samples")
    parser.add_argument("--size", type=int, help="input size (default: the zoo's)")
    parser.add_argument("--eps", type=float, default=1e-9)
    parser.add_argument("--product", default="gate-constant", choices=lxt_ref.PRODUCT_RULES)
    parser.add_argument("--double", action="store_true", help="run lrpc's explained graph in float64")
    parser.add_argument("--top", type=int, default=0, help="print only the N layers nearest the output")
    args = parser.parse_args(argv)
    name, kwargs, size = next(m for m in modern_zoo.MODELS if m[0] == args.model)
    size = args.size or size
    model, source = modern_zoo.build(name, kwargs, size)
    import lrpc

    rule_map = [f"product={args.product}"] if lxt_ref.has_products(model) else []
    explained = lrpc.compile(source, rule=f"epsilon:eps={args.eps:g}", rule_map=rule_map)
    x = modern_zoo.samples(size)[args.sample : args.sample + 1]
    logits = ort.InferenceSession(explained.SerializeToString()).run(["logits"], {"input": x})[0]
    ours = lrpc_layer_relevance(explained, x, args.double)
    theirs, z = lxt_layer_relevance(model, x, logits.argmax(1), args.product)
    names = [n.name for n in explained.graph.node if n.name in ours and n.name in theirs][::-1]
    print(f"{'layer (output first)':60s} {'rel L2':>9s} {'min|z|':>9s} {'median|z|':>9s}")
    for n in names[: args.top or None]:
        error = lxt_ref.relative_l2(ours[n], theirs[n].numpy())[0]
        print(f"{n:60s} {error:9.2e} {z[n].min().item():9.1e} {z[n].median().item():9.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
