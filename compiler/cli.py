"""Command line: `lrpc compile`, `lrpc explain`, `lrpc verify`, `lrpc inspect`, `lrpc bench` and `lrpc export`.

Exit status: 0 done; 1 `lrpc verify` (or `compile --verify`) found a failing check; 2 an error in the
user's model, files or options (one line: `lrpc: error: …`, no output file left behind); 3 an internal
error, a bug in lrpc (one line asking for a report; LRPC_DEBUG=1 shows the traceback); 128 + N a signal
(130 Ctrl-C, 143 SIGTERM, 129 SIGHUP: one line, temporary files and staging folders removed).
"""

from __future__ import annotations

import logging
import os
import sys

import numpy as np

from lrpc_runtime import DeviceUnavailableError, NotExplainedError
from lrpc_runtime.inputs import open_array
from lrpc_runtime.limits import MAX_BATCH_BYTES, size_text
from lrpc_runtime.metadata import KEY_EXPLAINED, KEY_METHOD, KEY_RULE, KEY_TARGET

from .api import checked_method, compile, plan
from .bench import bench, format_table
from .cli_parser import parser as build_parser
from .cli_explain import explain_command
from .emit import save
from .errors import LrpcError, one_line, printable
from .describe import describe_metadata, describe_plan, explained_metadata
from .outputs import check_output
from .signals import interrupted, signals_raise
from .triton import export_triton
from .options import CompileOptions
from .savedmodel import export_savedmodel, require_tensorflow
from .verify import verify


def _inspect(args) -> int:
    meta = explained_metadata(args.model)
    method = checked_method(args.method, args.rule, args.composite, args.rule_map, args.rule_map_file)
    if meta:
        print(printable(describe_metadata(args.model, meta)))
        return 0
    text, refused = describe_plan(args.model, plan(args.model, **CompileOptions.from_args(args).plan_options()), method)
    print(printable(text))
    return 2 if refused else 0


def _compile(args) -> int:
    log = (lambda line: print(f"  pass: {printable(line)}", file=sys.stderr)) if args.verbose else None
    options = CompileOptions.from_args(args).as_dict()
    savedmodel = args.format == "savedmodel"
    check_output(args.model, args.out_file, args.overwrite, savedmodel)
    if savedmodel:
        require_tensorflow()  # before compiling: a missing extra is the first thing to say
    proto = compile(
        args.model,
        **options,
        output=None if args.verify or savedmodel else args.out_file,
        overwrite=args.overwrite,
        log=log,
    )
    if args.verify:
        report = verify(
            proto,
            samples=args.verify_samples,
            seed=args.verify_seed,
            tolerance=args.verify_tolerance,
            name=args.out_file,
        )
        print(printable(report.text()))
        if not report.passed:
            print(f"lrpc: {args.out_file} not written: verify failed", file=sys.stderr)
            return 1
        if not savedmodel:
            save(proto, args.out_file)
    if savedmodel:
        names = export_savedmodel(proto, args.out_file)
    meta = {p.key: p.value for p in proto.metadata_props}
    what = f"method {meta[KEY_METHOD]}" if KEY_METHOD in meta else f"rule {meta[KEY_RULE]}"
    kind = (
        f" (TensorFlow SavedModel, signature serving_default → {', '.join(names['outputs'].values())})"
        if savedmodel
        else ""
    )
    print(
        printable(
            f"wrote {args.out_file}{kind}: {what}, target {meta[KEY_TARGET]}, "
            f"explains '{meta[KEY_EXPLAINED]}', opset {proto.opset_import[0].version}"
        )
    )
    return 0


def _verify(args) -> int:
    inputs = None
    if args.inputs is not None:  # mapped first: its header's size is checked before anything is read
        mapped = open_array(args.inputs, label=f"--inputs {args.inputs}")
        if mapped.nbytes > MAX_BATCH_BYTES:
            raise LrpcError(
                f"--inputs {args.inputs}: {size_text(mapped.nbytes)}, more than the "
                f"{size_text(MAX_BATCH_BYTES)} verify reads at once; give fewer samples"
            )
        inputs = np.array(mapped)
    report = verify(
        args.model, source=args.source, inputs=inputs, samples=args.samples, seed=args.seed, tolerance=args.tolerance
    )
    print(printable(report.text()))
    return 0 if report.passed else 1


def _bench(args) -> int:
    try:
        batches = [int(b) for b in args.batch.split(",")]
    except ValueError:
        raise LrpcError(f"--batch takes batch sizes like 1,16; got '{args.batch}'") from None
    result = bench(
        args.model,
        batches,
        args.threads,
        args.repeats,
        args.warmup,
        not args.no_memory,
        args.low_memory,
        **CompileOptions.from_args(args).as_dict(),
    )
    print(format_table(result))
    if args.json == "-":
        print(result.to_json())
    elif args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            f.write(result.to_json() + "\n")
    return 0


def _export(args) -> int:
    folder = export_triton(args.model, args.repo, args.name, args.max_batch, args.gpu)
    print(f"wrote {folder}: config.pbtxt and 1/model.onnx (serve with tritonserver --model-repository {args.repo})")
    return 0


COMMANDS = {
    "compile": _compile,
    "inspect": _inspect,
    "explain": explain_command,
    "verify": _verify,
    "bench": _bench,
    "export": _export,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    # onnx_ir logs what it finds odd in a model; unconfigured, Python would print that above lrpc's one
    # error line. The error itself names the problem; an application that configures logging still sees it.
    logging.getLogger("onnx_ir").addHandler(logging.NullHandler())
    try:
        with signals_raise():
            return COMMANDS[args.command](args)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM/SIGHUP (signals.py): every finally has run
        line, status = interrupted(e)
        sys.stderr.write(line)
        return status
    except (LrpcError, NotExplainedError, DeviceUnavailableError, ValueError, OSError) as e:
        print(f"lrpc: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # onnxruntime's own errors (a graph it cannot run) derive from Exception alone
        if type(e).__module__.startswith("onnxruntime"):
            print(f"lrpc: error: onnxruntime: {_one_line(e)}", file=sys.stderr)
            return 2
        if os.environ.get("LRPC_DEBUG"):
            raise
        print(
            f"lrpc: internal error: {type(e).__name__}: {_one_line(e)} — a bug in lrpc; please report it with "
            "the command and the model (LRPC_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 3


def _one_line(error: Exception) -> str:
    text = one_line(error)
    return printable(
        text if not isinstance(error, OSError) or not error.filename else f"{error.filename}: {error.strerror or text}"
    )


if __name__ == "__main__":
    sys.exit(main())
