"""The command line's grammar: every `lrpc` subcommand, its arguments, their checks and help texts.

`parser()` builds it; cli.py runs what it parses. Compile options are declared once here for
`compile`, `inspect` and `bench` (`_add_plan_options`) and read back through options.CompileOptions.
"""

from __future__ import annotations

import argparse
import math

from lrpc_runtime.files import STYLES

from . import __version__
from .cli_examples import BENCH_EXAMPLES, EXAMPLES, EXPLAIN_EXAMPLES, EXPORT_EXAMPLES, VERIFY_EXAMPLES
from .emit import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET
from .methods import method_summary
from .rules.assign import DEFAULT_COMPOSITE, describe_composites
from .rules.lrp import CONVENTIONS, describe_rules


def _add_plan_options(c: argparse.ArgumentParser) -> None:
    """The options that decide what is explained and how: shared by compile and inspect."""
    c.add_argument("model", help="an ONNX file (weights inline or as external data beside it)")
    c.add_argument("--rule", metavar="RULE", help="one LRP rule for every linear layer, with parameters")
    c.add_argument(
        "--composite",
        metavar="NAME[:params]",
        help=f"a named composite of rules per layer kind (default, with no --rule: {DEFAULT_COMPOSITE})",
    )
    c.add_argument(
        "--rule-map",
        nargs="+",
        action="extend",
        default=[],
        metavar="PATTERN=RULE",
        help="per-layer rules, first match wins; PATTERN: first, last, conv, dense, pool, an op type, "
        "or a glob on the layer name (e.g. 'conv1=flat' 'fc*=epsilon:eps=0.25')",
    )
    c.add_argument(
        "--rule-map-file",
        metavar="FILE.toml",
        help='per-layer rules from TOML: optional rule = "…" or composite = "…", and a [rules] '
        'table of PATTERN = "RULE" (in order, after the --rule-map entries)',
    )
    c.add_argument(
        "--convention",
        choices=list(CONVENTIONS),
        default="lrpc",
        help="reproduce a reference: zennit (start relevance 1), innvestigate (ε 1e-7, its α-β bias "
        "form) or lxt (ε 1e-12, constant addends such as position embeddings absorb their "
        "share); default lrpc (start relevance = the explained value, ε 1e-6)",
    )
    c.add_argument(
        "--target",
        default="max",
        metavar="max|N|input|all|mask",
        help="which units are explained: each sample's largest (max, default), unit N (a class; "
        "N or i,j,k for a multi-dim tensor), chosen per call by an int64 graph input 'target' "
        "[batch] (input), all units (all: e.g. a whole reconstruction), or weighted per call "
        "by a float graph input 'mask' of the tensor's shape (mask)",
    )
    c.add_argument(
        "--position",
        type=int,
        default=None,
        metavar="P",
        help="for a [batch, seq, vocab] tensor (a language-model head): the position whose logits are "
        "explained, negative from the end (default -1, the last, where seq is dynamic); --target "
        "then picks the token there (max: the most likely, a token id, or input)",
    )
    c.add_argument(
        "--output", dest="output_name", metavar="NAME", help="which model output to explain (default: the first)"
    )
    c.add_argument(
        "--explain",
        metavar="TENSOR[:INDEX]",
        help="explain an inner tensor instead of an output: a tensor, node or Keras layer name, "
        "with :INDEX to fix its unit (e.g. latent:3)",
    )
    c.add_argument(
        "--keep-output-activation",
        action="store_true",
        help="explain the output Softmax/LogSoftmax/Sigmoid's values (e.g. probabilities) "
        "instead of stripping it and explaining the logits",
    )
    c.add_argument(
        "--method",
        metavar="NAME[:params]",
        help=f"a gradient-family method instead of LRP: {method_summary()} (smoothgrad noise_input=1: "
        "the noise is a graph input 'noise' [samples, batch, ...]); e.g. --method "
        "integratedgradients:steps=32,baseline=0",
    )
    c.add_argument(
        "--opset",
        type=int,
        default=None,
        help=f"ONNX opset to emit, {MIN_OPSET}–{MAX_OPSET} (default: {DEFAULT_OPSET}, or the model's own if newer)",
    )


def _positive_number(text: str) -> float:
    """argparse type: a finite number > 0 (argparse names the option in its error)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"needs a number, got '{text}'") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"needs a finite number > 0, got '{text}'")
    return value


def _add_verify_options(c: argparse.ArgumentParser, prefix: str = "") -> None:
    c.add_argument(
        f"--{prefix}samples",
        type=int,
        default=4,
        metavar="N",
        help="how many random inputs verify draws (default 4; uniform [0, 1) pixels, through the "
        "file's preprocessing mean/std)",
    )
    c.add_argument(f"--{prefix}seed", type=int, default=0, help="seed of the random inputs (default 0)")
    c.add_argument(
        f"--{prefix}tolerance",
        type=_positive_number,
        default=1e-3,
        help="largest allowed max|R32 − R64| / max|R64| per sample (default 1e-3)",
    )


LOW_MEMORY_HELP = (
    "keep each weight once: onnxruntime's weight prepacking off, which otherwise packs a dense layer's weights "
    "for the forward and again for the backward pass (VGG-16 at batch 1 / 16: peak memory 42 / 20 %% lower, time "
    "within the noise; README: Speed)"
)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lrpc",
        description="Compile LRP explanations into plain ONNX graphs, run them on files, and check them.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lrpc {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    help_text = (
        f"rules (RULE[:param=value,...]):\n{describe_rules()}\n\n"
        f"composites (NAME[:param=value,...]):\n{describe_composites()}\n\n{EXAMPLES}"
    )
    c = commands.add_parser(
        "compile",
        help="compile MODEL into an ONNX graph that also returns relevance maps",
        description="Compile MODEL into one ONNX graph that returns the model's outputs and one relevance "
        "map per model input (output 'relevance', the input's shape).",
        epilog=help_text,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_plan_options(c)
    c.add_argument(
        "--per-feature",
        action="store_true",
        help="for token-id inputs (explained at their embedding lookup): also output the "
        "[batch, seq, hidden] map at the embedding, beside the per-token [batch, seq] one",
    )
    c.add_argument(
        "-o",
        "--out",
        dest="out_file",
        metavar="FILE",
        required=True,
        help="where to write the explained ONNX file (a folder for --format savedmodel)",
    )
    c.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing -o that is not an explained file (an earlier lrpc compile output is "
        "replaced anyway), even the source model itself",
    )
    c.add_argument(
        "--format",
        choices=["onnx", "savedmodel"],
        default="onnx",
        help="onnx (default): one ONNX file; savedmodel: a TensorFlow SavedModel folder computing the "
        "same (signature serving_default: the ONNX inputs and outputs by name, 'relevance' among "
        'them); needs TensorFlow: pip install "lrpc[keras]"',
    )
    c.add_argument(
        "--preprocess",
        metavar="SPEC",
        help="how `lrpc explain` turns images into inputs, stored in the file, e.g. "
        "'resize=224,224;mean=0.485,0.456,0.406;std=0.229,0.224,0.225' (resize at most 8192 a side; "
        "see lrpc explain --help)",
    )
    c.add_argument(
        "--verify",
        action="store_true",
        help="run `lrpc verify` on the result first; write it only when every check passes (exit 1 if not)",
    )
    _add_verify_options(c, "verify-")
    c.add_argument("-v", "--verbose", action="store_true", help="print what each canonization pass changed")
    i = commands.add_parser(
        "inspect",
        help="show the layers, canonizations, rules and what will be explained, compiling nothing",
        description="Show what `lrpc compile` would do with MODEL and these options: each layer with its\n"
        "shapes and rule, the canonizations applied, and what is explained. An explained file\n"
        "shows what it was compiled with (its lrpc.* metadata).",
        epilog=help_text,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_plan_options(i)
    e = commands.add_parser(
        "explain",
        help="explain images or .npy arrays with an explained file: heatmap PNGs and a predictions table",
        description="Run an explained file on images (PNG, JPEG, BMP), .npy arrays, or folders of them, in\n"
        "batches, and write one heatmap PNG per sample and a table of predictions, explained\n"
        "targets and relevance sums into OUTDIR (all or nothing: a failure writes no file).",
        epilog=EXPLAIN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    e.add_argument("model", help="an explained ONNX file (written by lrpc compile)")
    e.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image files (up to Pillow's 89.5 M-pixel limit), .npy files (one sample, or a batch along "
        "axis 0) or folders of them",
    )
    e.add_argument(
        "-o",
        "--out",
        dest="out_dir",
        metavar="OUTDIR",
        required=True,
        help="where the results go: a new or empty folder, not an input or inside one",
    )
    e.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a non-empty OUTDIR as a whole (its old files removed once the new ones are complete)",
    )
    e.add_argument(
        "--preprocess",
        metavar="SPEC",
        help="how images become inputs (overrides the file's spec; resize at most 8192 a side)",
    )
    e.add_argument(
        "--target",
        metavar="K|MASK.npy",
        help="the class to explain, for a file compiled with --target input; a mask .npy for --target mask",
    )
    e.add_argument(
        "--tokens",
        metavar="VOCAB",
        help="for token-id inputs (.npy int [batch, seq] or [seq], or .json lists of ids): the vocabulary "
        "(one token per line, line number = id; or a JSON list of strings): writes NAME.html and "
        "NAME.png per sample, the tokens coloured by relevance (a vocabulary up to 64 MiB; .json id "
        "files up to 16 MiB, .npy up to 16777216 ids)",
    )
    e.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="where onnxruntime runs (cuda needs onnxruntime-gpu: pip install 'lrpc[cuda]')",
    )
    e.add_argument("--low-memory", action="store_true", help=LOW_MEMORY_HELP)
    e.add_argument(
        "--batch-size",
        type=int,
        default=32,
        metavar="N",
        help="samples per run, 1 to 100000 (default 32); one batch of inputs may take at most 2 GiB as float32",
    )
    e.add_argument(
        "--style",
        choices=STYLES,
        default="side-by-side",
        help="each PNG: the input beside its heatmap (default), the heatmap over it, or alone",
    )
    e.add_argument(
        "--overlay-alpha",
        type=float,
        default=0.5,
        metavar="A",
        help="the heatmap's weight in --style overlay, 0 to 1 (default 0.5)",
    )
    e.add_argument("--format", choices=["csv", "json"], default="csv", help="predictions.csv or .json (default csv)")
    e.add_argument("--save-relevance", action="store_true", help="also write NAME.relevance.npy per sample")
    e.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    e.add_argument(
        "--ray",
        action="store_true",
        help="run on Ray Data, one onnxruntime session per actor (pip install 'lrpc[ray]'); on several "
        "machines the model, INPUTs and OUTDIR must be on storage every node sees at the same path",
    )
    e.add_argument(
        "--address",
        metavar="ADDR",
        help="with --ray: a running cluster (HOST:6379, auto, ray://HOST:10001); default: a local one",
    )
    e.add_argument(
        "--actors", type=int, metavar="N", help="with --ray: sessions at once, one CPU each, 1 to 1024 (default 2)"
    )
    v = commands.add_parser(
        "verify",
        help="check an explained file: NaN/Inf, agreement with a float64 reference, conservation",
        description="Check an explained file on random (or given) inputs and print a per-sample report;\n"
        "exit 1 when a check fails.",
        epilog=VERIFY_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    v.add_argument("model", help="an explained ONNX file (written by lrpc compile)")
    v.add_argument("--source", metavar="MODEL", help="the model it was compiled from: compare with a fresh compile")
    v.add_argument("--inputs", metavar="X.npy", help="inputs to check on (a batch along axis 0) instead of random ones")
    _add_verify_options(v)
    t = commands.add_parser(
        "bench",
        help="time the explained graph against the plain forward pass (ratio, compile time, memory)",
        description="Compile MODEL with the given options and run the plain model and the explained graph in\n"
        "onnxruntime (CPU) under identical settings, interleaved, warm-up excluded: median times,\n"
        "their spread (p90 − p10, relative), the ratio explained ÷ forward per batch size, compile\n"
        "and session-creation times, and each session's peak memory (in a child process).",
        epilog=BENCH_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_plan_options(t)
    t.add_argument(
        "--batch",
        default="1",
        metavar="B[,B…]",
        help="batch sizes, each 1 to 100000, one batch of inputs at most 2 GiB (default 1), e.g. 1,16",
    )
    t.add_argument(
        "--threads", type=int, default=1, metavar="N", help="onnxruntime intra-op threads, 1 to 1024 (default 1)"
    )
    t.add_argument(
        "--repeats", type=int, default=20, metavar="N", help="timed runs per batch and graph, 1 to 10000 (default 20)"
    )
    t.add_argument("--warmup", type=int, default=3, metavar="N", help="untimed runs first, 0 to 10000 (default 3)")
    t.add_argument("--low-memory", action="store_true", help=LOW_MEMORY_HELP + "; both sessions")
    t.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    t.add_argument("--json", metavar="FILE", help="also write the result as JSON ('-': standard output)")
    x = commands.add_parser(
        "export",
        help="package an explained file for a serving engine (triton)",
        description="Write an explained file as a Triton Inference Server model repository entry:\n"
        "REPO/NAME/config.pbtxt (onnxruntime backend, dynamic batching, inputs and outputs with\n"
        "their types and dims from the graph) and REPO/NAME/1/model.onnx.",
        epilog=EXPORT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    x.add_argument("engine", choices=["triton"], help="the serving engine")
    x.add_argument("model", help="an explained ONNX file (written by lrpc compile)")
    x.add_argument("--repo", required=True, metavar="DIR", help="the model repository folder")
    x.add_argument("--name", help="the model's name in the repository (default: the file's name)")
    x.add_argument("--max-batch", type=int, default=8, metavar="B", help="Triton's max_batch_size (default 8)")
    x.add_argument("--gpu", action="store_true", help="run the instances on GPUs (KIND_GPU; default KIND_CPU)")
    return parser
