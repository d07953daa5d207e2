"""Command line: `lrpc compile MODEL -o OUT` and `lrpc inspect MODEL`.

Errors in the user's model or options print one line (`lrpc: error: …`) and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .api import checked_method, compile, plan
from .emit import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET
from .errors import LrpcError
from .inspect import describe_metadata, describe_plan, explained_metadata
from .methods import method_summary
from .rules.assign import DEFAULT_COMPOSITE, describe_composites
from .rules.lrp import CONVENTIONS, describe_rules

EXAMPLES = """examples:
  lrpc compile model.onnx -o explained.onnx                       # composite EpsilonPlusFlat
  lrpc compile model.onnx --rule alpha1beta0 -o explained.onnx
  lrpc compile model.onnx --composite EpsilonGammaBox:low=-3,high=3 --target input -o explained.onnx
  lrpc compile model.onnx --composite EpsilonPlus --rule-map 'conv1=flat' 'fc*=epsilon:eps=0.25' -o e.onnx
  lrpc compile autoencoder.onnx --output reconstruction --target all -o explained.onnx
  lrpc compile autoencoder.onnx --explain latent:3 -o explained.onnx
  lrpc inspect model.onnx --composite EpsilonPlusFlat
  lrpc inspect model.onnx --method guidedbackprop

then, with onnxruntime alone:
  outputs..., relevance = onnxruntime.InferenceSession("explained.onnx").run(None, {"input": x})
"""


def _add_plan_options(c: argparse.ArgumentParser) -> None:
    """The options that decide what is explained and how: shared by compile and inspect."""
    c.add_argument("model", help="an ONNX file (weights inline or as external data beside it)")
    c.add_argument("--rule", metavar="RULE", help="one LRP rule for every linear layer, with parameters")
    c.add_argument("--composite", metavar="NAME[:params]",
                   help=f"a named composite of rules per layer kind (default, with no --rule: {DEFAULT_COMPOSITE})")
    c.add_argument("--rule-map", nargs="+", action="extend", default=[], metavar="PATTERN=RULE",
                   help="per-layer rules, first match wins; PATTERN: first, last, conv, dense, pool, an op type, "
                        "or a glob on the layer name (e.g. 'conv1=flat' 'fc*=epsilon:eps=0.25')")
    c.add_argument("--rule-map-file", metavar="FILE.toml",
                   help="per-layer rules from TOML: optional rule = \"…\" or composite = \"…\", and a [rules] "
                        "table of PATTERN = \"RULE\" (in order, after the --rule-map entries)")
    c.add_argument("--convention", choices=list(CONVENTIONS), default="lrpc",
                   help="reproduce a reference: zennit (start relevance 1) or innvestigate (ε 1e-7, its α-β bias "
                        "form); default lrpc (start relevance = the explained value, ε 1e-6)")
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
    c.add_argument("--method", metavar="NAME[:params]",
                   help=f"a gradient-family method instead of LRP: {method_summary()} (smoothgrad noise_input=1: "
                        "the noise is a graph input 'noise' [samples, batch, ...]); e.g. --method "
                        "integratedgradients:steps=32,baseline=0")
    c.add_argument("--opset", type=int, default=None,
                   help=f"ONNX opset to emit, {MIN_OPSET}–{MAX_OPSET} "
                        f"(default: {DEFAULT_OPSET}, or the model's own if newer)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lrpc", description="Compile LRP explanations into plain ONNX graphs.", epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"lrpc {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    help_text = (f"rules (RULE[:param=value,...]):\n{describe_rules()}\n\n"
                 f"composites (NAME[:param=value,...]):\n{describe_composites()}\n\n{EXAMPLES}")
    c = commands.add_parser(
        "compile", help="compile MODEL into an ONNX graph that also returns relevance maps",
        description="Compile MODEL into one ONNX graph that returns the model's outputs and one relevance "
                    "map per model input (output 'relevance', the input's shape).",
        epilog=help_text, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_plan_options(c)
    c.add_argument("-o", "--out", dest="out_file", metavar="FILE", required=True,
                   help="where to write the explained ONNX file")
    c.add_argument("-v", "--verbose", action="store_true", help="print what each canonization pass changed")
    i = commands.add_parser(
        "inspect", help="show the layers, canonizations, rules and what will be explained, compiling nothing",
        description="Show what `lrpc compile` would do with MODEL and these options: each layer with its "
                    "shapes and rule, the canonizations applied, and what is explained. An explained file "
                    "also shows what it was compiled with.",
        epilog=help_text, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_plan_options(i)
    return parser


def _plan_options(args) -> dict:
    return dict(rule=args.rule, composite=args.composite, rule_map=args.rule_map, rule_map_file=args.rule_map_file,
                convention=args.convention, target=args.target, output_name=args.output_name,
                explain=args.explain, keep_output_activation=args.keep_output_activation, opset=args.opset)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "inspect":
            meta = explained_metadata(args.model)
            method = checked_method(args.method, args.rule, args.composite, args.rule_map, args.rule_map_file)
            print(describe_metadata(args.model, meta) if meta else
                  describe_plan(args.model, plan(args.model, **_plan_options(args)), method))
            return 0
        log = (lambda line: print(f"  pass: {line}", file=sys.stderr)) if args.verbose else None
        proto = compile(args.model, **_plan_options(args), output=args.out_file, log=log, method=args.method)
    except LrpcError as e:
        print(f"lrpc: error: {e}", file=sys.stderr)
        return 2
    meta = {p.key: p.value for p in proto.metadata_props}
    what = f"method {meta['lrpc.method']}" if "lrpc.method" in meta else f"rule {meta['lrpc.rule']}"
    print(f"wrote {args.out_file}: {what}, target {meta['lrpc.target']}, "
          f"explains '{meta['lrpc.explained']}', opset {proto.opset_import[0].version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
