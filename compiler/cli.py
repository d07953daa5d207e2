"""Command line: `lrpc compile MODEL --rule RULE -o OUT`.

Errors in the user's model or options print one line (`lrpc: error: …`) and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .api import DEFAULT_RULE, compile
from .emit import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET
from .errors import LrpcError
from .rules.lrp import describe_rules

EXAMPLES = """examples:
  lrpc compile model.onnx --rule alpha1beta0 -o explained.onnx
  lrpc compile model.onnx --rule epsilon:eps=0.25 --target input -o explained.onnx
  lrpc compile model.onnx --rule zbox:low=0,high=1 --target 3 -o explained.onnx
  lrpc compile autoencoder.onnx --output reconstruction --target all -o explained.onnx
  lrpc compile autoencoder.onnx --explain latent:3 -o explained.onnx

then, with onnxruntime alone:
  outputs..., relevance = onnxruntime.InferenceSession("explained.onnx").run(None, {"input": x})
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lrpc", description="Compile LRP explanations into plain ONNX graphs.", epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"lrpc {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    c = commands.add_parser(
        "compile", help="compile MODEL into an ONNX graph that also returns relevance maps",
        description="Compile MODEL into one ONNX graph that returns the model's outputs and one relevance "
                    "map per model input (output 'relevance', the input's shape).",
        epilog=f"rules (RULE[:param=value,...]):\n{describe_rules()}\n\n{EXAMPLES}",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("model", help="an ONNX file (weights inline or as external data beside it)")
    c.add_argument("-o", "--out", dest="out_file", metavar="FILE", required=True,
                   help="where to write the explained ONNX file")
    c.add_argument("--rule", default=DEFAULT_RULE, metavar="RULE",
                   help=f"LRP rule for every linear layer, with parameters (default: {DEFAULT_RULE})")
    c.add_argument("--target", default="max", metavar="max|N|input|all|mask",
                   help="which units are explained: each sample's largest (max, default), unit N (a class; "
                        "N or i,j,k for a multi-dim tensor), chosen per call by an int64 graph input 'target' "
                        "[batch] (input), all units (all: e.g. a whole reconstruction), or weighted per call "
                        "by a float graph input 'mask' of the tensor's shape (mask)")
    c.add_argument("--output", dest="output_name", metavar="NAME",
                   help="which model output to explain (default: the first)")
    c.add_argument("--explain", metavar="TENSOR[:INDEX]",
                   help="explain an inner tensor instead of an output: a tensor, node or Keras layer name, "
                        "with :INDEX to fix its unit (e.g. latent:3)")
    c.add_argument("--keep-output-activation", action="store_true",
                   help="explain the output Softmax/LogSoftmax/Sigmoid's values (e.g. probabilities) "
                        "instead of stripping it and explaining the logits")
    c.add_argument("--opset", type=int, default=None,
                   help=f"ONNX opset to emit, {MIN_OPSET}–{MAX_OPSET} "
                        f"(default: {DEFAULT_OPSET}, or the model's own if newer)")
    c.add_argument("-v", "--verbose", action="store_true", help="print what each canonization pass changed")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    log = (lambda line: print(f"  pass: {line}", file=sys.stderr)) if args.verbose else None
    try:
        proto = compile(args.model, rule=args.rule, target=args.target, output_name=args.output_name,
                        explain=args.explain, keep_output_activation=args.keep_output_activation,
                        opset=args.opset, output=args.out_file, log=log)
    except LrpcError as e:
        print(f"lrpc: error: {e}", file=sys.stderr)
        return 2
    meta = {p.key: p.value for p in proto.metadata_props}
    print(f"wrote {args.out_file}: rule {meta['lrpc.rule']}, target {meta['lrpc.target']}, "
          f"explains '{meta['lrpc.explained']}', opset {proto.opset_import[0].version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
