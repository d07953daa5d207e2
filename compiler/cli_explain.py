"""`lrpc explain`: image, array and token-id files through an explained graph (lrpc_runtime), locally or
on Ray Data; what the command prints. The parser and the other commands are in cli.py."""

from __future__ import annotations

import numpy as np

from lrpc_runtime import explain_files
from lrpc_runtime.files import check_arguments, choose_preprocessing
from lrpc_runtime.inputs import open_array
from lrpc_runtime.limits import MAX_ACTORS, MAX_BATCH_BYTES, MAX_BATCH_SIZE, bounded_int, size_text
from lrpc_runtime.ray_files import RayNotInstalledError, explain_files_ray, import_ray
from lrpc_runtime.session import Explainer
from lrpc_runtime.text import explain_token_files, token_input

from .errors import LrpcError


def _explain_target(text: str | None):
    if text is None:
        return None
    if text.endswith(".npy"):
        return _mask(text)
    try:
        return int(text)
    except ValueError:
        raise LrpcError(f"--target takes a class index (an integer) or a mask .npy file, not '{text}'") from None


def _mask(path: str) -> np.ndarray:
    """A --target mask .npy, its size checked from its header before it is read (one batch's bound)."""
    mapped = open_array(path, "the mask", label=f"--target {path}")
    if mapped.nbytes > MAX_BATCH_BYTES:
        raise LrpcError(
            f"--target {path}: a mask of {size_text(mapped.nbytes)}, more than the "
            f"{size_text(MAX_BATCH_BYTES)} lrpc explain reads at once"
        )
    return np.array(mapped)


PREPROCESS_ORIGIN = {
    "given": "--preprocess",
    "file": "the spec stored in the file",
    "default": "the defaults: no spec given or stored",
}


def explain_command(args) -> int:
    bounded_int("--batch-size", args.batch_size, 1, MAX_BATCH_SIZE)
    _check_ray_options(args)
    check_arguments(
        args.style,
        args.format,
        args.out_dir,
        inputs=[args.model, *args.inputs],
        overwrite=args.overwrite,
        overlay_alpha=args.overlay_alpha,
        batch_size=args.batch_size,
    )
    explainer = Explainer(
        args.model,
        device="cpu" if args.ray else args.device,
        batch_size=args.batch_size,
        threads=1 if args.ray else None,
        low_memory=args.low_memory,
    )
    if token_input(explainer) is not None:
        return _explain_tokens(args, explainer)
    if args.tokens is not None:
        raise LrpcError(f"--tokens: {args.model} has no token-id input (it explains float inputs)")
    spec, where = choose_preprocessing(args.preprocess, explainer.metadata.preprocess)
    options = dict(
        preprocess=spec,
        target=_explain_target(args.target),
        batch_size=args.batch_size,
        style=args.style,
        overlay_alpha=args.overlay_alpha,
        save_relevance=args.save_relevance,
        table=args.format,
        progress=False if args.quiet else None,
        overwrite=args.overwrite,
    )
    actors = 2 if args.actors is None else args.actors
    if args.ray:
        rows = explain_files_ray(
            args.model,
            args.inputs,
            args.out_dir,
            address=args.address,
            device=args.device,
            actors=actors,
            low_memory=args.low_memory,
            **options,
        )
    else:
        rows = explain_files(explainer, args.inputs, args.out_dir, **options)
    images = sum(1 for row in rows if row["heatmap"])
    runner = f"Ray Data, {_count(actors, 'actor')} on {args.device}" if args.ray else explainer.providers[0]
    print(
        f"explained {_count(len(rows), 'sample')} ({explainer.rule}, target {explainer.target_mode}, "
        f"{runner}): {_count(images, 'heatmap')} and predictions.{args.format} in {args.out_dir}"
    )
    if any(r["source"].lower().endswith((".png", ".jpg", ".jpeg", ".bmp")) for r in rows):
        print(f"images preprocessed with {spec.describe()} ({PREPROCESS_ORIGIN[where]})")
    return 0


def _explain_tokens(args, explainer) -> int:
    """lrpc explain on token ids (lrpc_runtime.text): the table, and HTML and PNG pages with --tokens."""
    if args.ray or args.preprocess or args.save_relevance:
        raise LrpcError("--ray, --preprocess and --save-relevance apply to image and array inputs, not token ids")
    if explainer.target_mode == "input" and args.target is None:
        raise LrpcError(f"{args.model} was compiled with --target input: give --target TOKEN (the token id to explain)")
    rows = explain_token_files(
        explainer,
        args.inputs,
        args.out_dir,
        tokens=args.tokens,
        target=_explain_target(args.target),
        table=args.format,
        overwrite=args.overwrite,
        model_path=args.model,
    )
    pages = f", {_count(len(rows), 'HTML page')} and PNGs" if args.tokens else ""
    print(
        f"explained {_count(len(rows), 'sample')} of token ids ({explainer.rule}, target {explainer.target_mode})"
        f": predictions.{args.format}{pages} in {args.out_dir}"
    )
    return 0


def _check_ray_options(args) -> None:
    """--address and --actors only with --ray; --ray only where Ray Data is installed."""
    if not args.ray:
        if args.address is not None or args.actors is not None:
            raise LrpcError("--address and --actors take effect only with --ray")
        return
    if args.actors is not None:
        bounded_int("--actors", args.actors, 1, MAX_ACTORS)
    try:
        import_ray()
    except RayNotInstalledError as err:
        raise LrpcError(str(err)) from None


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"
