"""``lrpc explain``: explain image and ``.npy`` files in batches, write heatmap PNGs and a table.

For every sample (see :mod:`lrpc_runtime.inputs`) it writes ``NAME.png`` — the relevance map
summed over channels, diverging colormap centred on zero with symmetric scaling (red: relevance
for the explained unit, blue: against it), beside the model input, blended over it, or alone — and
one row of ``predictions.csv`` (or ``.json``): the predicted class and its score (for a
[batch, classes] output), the explained target, and the relevance sum. Images go through the
preprocessing spec given by the caller, else the one stored in the file (``lrpc.preprocess``),
else the defaults (resize to the input's size, pixels scaled to [0, 1]); ``.npy`` arrays are
taken as model inputs as they are.

All files are written into a hidden staging folder beside ``out_dir`` and published with one rename
at the end (:mod:`lrpc_runtime.staging`), so a failure or a signal leaves no partial output. An existing
``out_dir`` that is not empty is refused unless ``overwrite``, and then replaced as a whole; an ``out_dir``
that is an input, holds one or lies inside an input folder is always refused. The pieces
(:func:`plan_files`, :func:`explain_chunk`, :func:`staged_output`, :func:`write_table`) are shared with the
Ray path (:mod:`lrpc_runtime.ray_files`).

Example::

    >>> rows = explain_files("digits_explained.onnx", ["digits/"], "heatmaps/")  # doctest: +SKIP
    >>> rows[0]["predicted"], rows[0]["heatmap"]                               # doctest: +SKIP
    (3, 'three.png')
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .heatmap import save_heatmap
from .inputs import SampleRef, collect, load_samples
from .limits import MAX_BATCH_SIZE, bounded_int
from .preprocess import Preprocessing, guess_layout
from .progress import Progress
from .session import Explainer
from .staging import check_out_dir, guard_inputs, staged_folder

__all__ = [
    "STYLES",
    "FilePlan",
    "SampleWriting",
    "check_arguments",
    "choose_preprocessing",
    "explain_chunk",
    "explain_files",
    "model_paths",
    "plan_files",
    "staged_output",
    "write_table",
]

STYLES = ("side-by-side", "overlay", "heatmap")
TABLES = ("csv", "json")
COLUMNS = ("input", "source", "index", "predicted", "score", "target", "relevance_sum", "heatmap")


def choose_preprocessing(given: str | Preprocessing | None, stored: str | None) -> tuple[Preprocessing, str]:
    """(spec, where it came from): the caller's, else the file's ``lrpc.preprocess``, else defaults.

    Example::

        >>> choose_preprocessing(None, '{"scale":0.0625}')
        (Preprocessing(resize=None, scale=0.0625, mean=None, std=None, layout=None, color=None, invert=False), 'file')
    """
    if isinstance(given, Preprocessing):
        return given, "given"
    if given is not None:
        return Preprocessing.parse(given), "given"
    if stored:
        return Preprocessing.from_json(stored), "file"
    return Preprocessing(), "default"


def _channel_axis(sample_shape: tuple[int, ...], layout: str | None) -> int | None:
    """The channel axis of one sample for drawing (None: a 2-D map); raises for maps not drawable."""
    if len(sample_shape) == 2:
        return None
    if len(sample_shape) == 3:
        return -1 if layout == "NHWC" else 0
    raise ValueError(f"no heatmap for samples of shape {list(sample_shape)} (only [H, W] or 3-D images)")


def _drawable(image: np.ndarray, axis: int | None) -> bool:
    return axis is None or image.shape[axis] in (1, 3)


def _write_picture(
    path: Path, relevance: np.ndarray, image: np.ndarray, style: str, layout: str | None, overlay_alpha: float
) -> bool:
    """Write one heatmap PNG; False when the sample has no picture form (e.g. a feature vector)."""
    try:
        axis = _channel_axis(relevance.shape, layout)
    except ValueError:
        return False
    show_image = style != "heatmap" and _drawable(image, axis)
    save_heatmap(
        path,
        relevance,
        image=image if show_image else None,
        side_by_side=style == "side-by-side" and show_image,
        overlay_alpha=overlay_alpha,
        channel_axis=0 if axis is None else axis,
    )
    return True


def _prediction(outputs: dict[str, np.ndarray], preferred: str | None) -> np.ndarray | None:
    """The [batch, classes] output the predicted class is read from (None when there is none)."""
    name = preferred if preferred in outputs else next(iter(outputs), None)
    values = outputs.get(name) if name is not None else None
    return values if values is not None and values.ndim == 2 else None


def _target_column(explainer: Explainer, predicted: np.ndarray | None, given: np.ndarray | None, n: int) -> list:
    mode = explainer.target_mode
    if mode == "input":
        return [int(t) for t in given]
    if mode.startswith("fixed:"):
        return [mode[6:]] * n
    if mode == "max" and predicted is not None and explainer.metadata.output is not None:
        return [int(k) for k in predicted.argmax(1)]
    return [mode] * n


def _batch_target(explainer: Explainer, target: Any, n: int) -> np.ndarray | None:
    """The ``target=`` argument for a batch of ``n``: an int per sample, or the mask repeated."""
    if target is None:
        return None
    array = np.asarray(target)
    if explainer.target_mode == "mask":
        mask_rank = len(explainer.mask_shape or ())
        return np.broadcast_to(array, (n, *array.shape)) if array.ndim == mask_rank - 1 else array
    return np.full(n, int(array), np.int64) if array.ndim == 0 else array


def _rows(
    refs: Sequence[SampleRef],
    explainer: Explainer,
    outputs: dict,
    relevance: np.ndarray,
    targets: np.ndarray | None,
    drawn: list[bool],
) -> list[dict]:
    scores = _prediction(outputs, explainer.metadata.output)
    target = _target_column(explainer, scores, targets, len(refs))
    sums = relevance.reshape(len(refs), -1).sum(axis=1, dtype=np.float64)
    rows = []
    for i, ref in enumerate(refs):
        row = {
            "input": ref.name,
            "source": ref.source,
            "index": ref.index,
            "target": target[i],
            "relevance_sum": float(sums[i]),
            "heatmap": f"{ref.name}.png" if drawn[i] else None,
        }
        if scores is not None:
            row.update(predicted=int(scores[i].argmax()), score=float(scores[i].max()))
        rows.append(row)
    return rows


def _table_text(rows: list[dict], kind: str) -> str:
    if kind == "json":
        return json.dumps(rows, indent=1) + "\n"
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if row.get(k) is None else row.get(k)) for k in COLUMNS} for row in rows)
    return buffer.getvalue()


@dataclass(frozen=True)
class FilePlan:
    """What one ``explain_files`` run reads: the samples, and how they become model inputs."""

    refs: list[SampleRef]
    spec: Preprocessing
    shape: tuple
    layout: str | None


@dataclass(frozen=True)
class SampleWriting:
    """How each sample's files are written: the PNG style, and the optional relevance array."""

    style: str = "side-by-side"
    overlay_alpha: float = 0.5
    save_relevance: bool = False


def _fraction(value: Any) -> bool:
    """A number from 0 to 1 (NaN is not)."""
    try:
        return not isinstance(value, bool) and 0.0 <= float(value) <= 1.0
    except (TypeError, ValueError):
        return False


def check_arguments(
    style: str,
    table: str,
    out_dir: str | os.PathLike,
    *,
    inputs: Sequence = (),
    overwrite: bool = False,
    overlay_alpha: float = 0.5,
    batch_size: int = 32,
) -> Path:
    """``out_dir`` as a Path, after the checks that need no model (ValueError on a bad one): the style,
    table, overlay alpha (0 to 1) and batch size (1 to limits.MAX_BATCH_SIZE), ``out_dir`` apart from the
    ``inputs`` (files, folders, the model's path), and not a non-empty folder unless ``overwrite``."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {', '.join(STYLES)}, got {style!r}")
    if table not in TABLES:
        raise ValueError(f"table must be csv or json, got {table!r}")
    if not _fraction(overlay_alpha):
        raise ValueError(f"--overlay-alpha (overlay_alpha) must be from 0 to 1, not {overlay_alpha}")
    bounded_int("--batch-size (batch_size)", batch_size, 1, MAX_BATCH_SIZE)
    out_dir = Path(out_dir)
    guard_inputs(out_dir, inputs)
    check_out_dir(out_dir, overwrite)
    return out_dir


def model_paths(model: Any) -> list:
    """The model as a path to keep out of the output folder (none for bytes or an Explainer)."""
    return [model] if isinstance(model, (str, os.PathLike)) else []


def plan_files(
    explainer: Explainer, inputs: Sequence[str | os.PathLike], preprocess: str | Preprocessing | None
) -> FilePlan:
    """The samples ``inputs`` hold and how to read them for ``explainer``'s single input."""
    if len(explainer.input_names) != 1:
        raise ValueError(
            f"the model has {len(explainer.input_names)} inputs {explainer.input_names}; explaining "
            "files needs a single-input model (use Explainer.explain with a dict of arrays)"
        )
    shape = explainer.input_shapes[explainer.input_names[0]]
    spec, _ = choose_preprocessing(preprocess, explainer.metadata.preprocess)
    refs = collect(inputs, input_rank=len(shape), sample_dims=shape[1:])
    return FilePlan(refs, spec, shape, spec.layout or guess_layout(shape))


def explain_chunk(
    explainer: Explainer, chunk: Sequence[SampleRef], plan: FilePlan, target: Any, folder: Path, writing: SampleWriting
) -> list[dict]:
    """Explain one batch of samples, write their files into ``folder``; their table rows."""
    x = load_samples(chunk, plan.spec, plan.shape)
    targets = _batch_target(explainer, target, len(chunk))
    result = explainer.explain(x, target=targets)
    relevance = result.relevance_map
    drawn = [
        _write_picture(
            folder / f"{ref.name}.png", relevance[i], x[i], writing.style, plan.layout, writing.overlay_alpha
        )
        for i, ref in enumerate(chunk)
    ]
    if writing.save_relevance:
        for i, ref in enumerate(chunk):
            np.save(folder / f"{ref.name}.relevance.npy", relevance[i])
    return _rows(
        chunk, explainer, result.outputs, relevance, targets if explainer.target_mode == "input" else None, drawn
    )


def write_table(folder: Path, rows: list[dict], table: str) -> None:
    """``predictions.csv`` (or ``.json``) in ``folder``."""
    (folder / f"predictions.{table}").write_text(_table_text(rows, table), encoding="utf-8")


staged_output = staged_folder  # the name the Ray path imports


def explain_files(
    model: str | os.PathLike | bytes | Explainer,
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    device: str = "cpu",
    preprocess: str | Preprocessing | None = None,
    target: Any = None,
    batch_size: int = 32,
    style: str = "side-by-side",
    overlay_alpha: float = 0.5,
    save_relevance: bool = False,
    table: str = "csv",
    progress: bool | None = None,
    overwrite: bool = False,
    low_memory: bool = False,
) -> list[dict]:
    """Explain every sample in ``inputs`` (files and folders) and write the results into ``out_dir``.

    ``model`` is an explained file (or an :class:`Explainer`); ``target`` an int for files compiled
    with ``--target input``, or a mask array for ``--target mask``; ``style`` one of
    ``side-by-side`` (input left, heatmap right), ``overlay`` or ``heatmap``; ``save_relevance``
    also writes ``NAME.relevance.npy``; ``table`` is ``csv`` or ``json``; ``progress`` draws a bar
    on stderr (None: only on a terminal); ``overwrite`` replaces a non-empty ``out_dir`` as a whole (else
    it is refused); ``low_memory`` is :class:`Explainer`'s (for a model given as a path or bytes). Returns the
    table's rows.

    Example::

        >>> rows = explain_files("explained.onnx", ["cat.jpg"], "out", preprocess="resize=224,224")  # doctest: +SKIP
    """
    out_dir = check_arguments(
        style,
        table,
        out_dir,
        inputs=[*inputs, *model_paths(model)],
        overwrite=overwrite,
        overlay_alpha=overlay_alpha,
        batch_size=batch_size,
    )
    explainer = (
        model
        if isinstance(model, Explainer)
        else Explainer(model, device=device, batch_size=batch_size, low_memory=low_memory)
    )
    plan = plan_files(explainer, inputs, preprocess)
    writing = SampleWriting(style, overlay_alpha, save_relevance)
    with staged_folder(out_dir, overwrite) as staging:
        rows: list[dict] = []
        with Progress(len(plan.refs), "explaining", enabled=progress) as bar:
            for start in range(0, len(plan.refs), batch_size):
                chunk = plan.refs[start : start + batch_size]
                rows += explain_chunk(explainer, chunk, plan, target, staging, writing)
                bar.advance(len(chunk))
        write_table(staging, rows, table)
    return rows
