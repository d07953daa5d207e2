"""``lrpc explain`` on token ids: per-token relevance in the table, an HTML page and a PNG per sample.

A file compiled from a model with an integer input of token ids (its ``lrpc.relevance_outputs`` has an
entry of kind ``token``) returns ``R_ids [batch, seq]``: each token's relevance, the sum over the hidden
axis of the relevance at its embedding. Inputs are ``.npy`` arrays of integers, ``[batch, seq]`` (a batch)
or ``[seq]`` (one sample), or ``.json`` files holding a list of ids or a list of such lists (samples of
different lengths run one at a time). Other integer inputs of the model are fed as ``1`` where the name
says mask (``attention_mask``), else ``0`` (``token_type_ids``), every position alike.

Given a vocabulary (one token per line, line number = id; or a JSON list of strings) each sample also
gets ``NAME.html`` — the tokens as spans on a background from blue (against) through white to red (for
the explained unit), scaled by ``m = max|R|`` of the sample, the id and relevance on hover — and
``NAME.png``, the same text as coloured boxes (Pillow's default font) with a colour legend. Everything is
written through the staging folder of :mod:`lrpc_runtime.staging`: all or nothing, never over a
non-empty folder unless ``overwrite``.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .heatmap import _colorize, _to_uint8
from .inputs import _unique, open_array
from .limits import MAX_TOKEN_IDS, MAX_TOKEN_JSON_BYTES, MAX_VOCABULARY_BYTES, size_text
from .session import Explainer
from .staging import check_out_dir, guard_inputs, staged_folder
from .metadata import KEY_POSITION, KEY_RELEVANCE_OUTPUTS

__all__ = ["explain_token_files", "load_vocabulary", "read_ids", "token_input"]

TOKEN_SUFFIXES = (".npy", ".json")


def token_input(explainer: Explainer) -> tuple[str, int | None] | None:
    """(name of the token-id input, vocabulary size) of an explained file, or None for one without."""
    described = json.loads(explainer.metadata.extra.get(KEY_RELEVANCE_OUTPUTS, "{}") or "{}")
    for entry in described.values():
        if entry.get("kind") == "token" and entry.get("input") in explainer.input_names:
            vocab = entry.get("vocab")
            return entry["input"], vocab if isinstance(vocab, int) and not isinstance(
                vocab, bool
            ) and vocab > 0 else None
    return None


def load_vocabulary(path: str | os.PathLike) -> list[str]:
    """Tokens by id: a JSON list of strings, or a text file with one token per line."""
    path = Path(path)
    try:
        _check_file_size(path, MAX_VOCABULARY_BYTES, f"--tokens {path}: a vocabulary")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"--tokens {path}: cannot read the vocabulary ({err})") from None
    if path.suffix.lower() == ".json":
        try:
            tokens = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"--tokens {path}: not valid JSON ({err})") from None
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise ValueError(f"--tokens {path}: a JSON vocabulary is a list of strings (index = id)")
        return tokens
    return text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")


def _check_file_size(path: Path, limit: int, what: str) -> None:
    """Refuse a file larger than ``limit`` before reading it (ValueError)."""
    size = path.stat().st_size
    if size > limit:
        raise ValueError(f"{what} of {size_text(size)}, more than the {size_text(limit)} lrpc explain reads")


def _check_count(source: str, array: np.ndarray) -> None:
    if array.size > MAX_TOKEN_IDS:
        raise ValueError(
            f"{source}: {array.size:,} token ids, more than the {MAX_TOKEN_IDS:,} lrpc explain reads "
            "from one file; split it"
        )


def _read_npy_ids(path: Path, vocab: int | None) -> np.ndarray:
    """The ids of a .npy file, its size checked from its header before it is read."""
    mapped = open_array(path, "the token ids")
    _check_count(str(path), mapped)
    return _check_ids(str(path), np.array(mapped), vocab)


def _check_ids(source: str, array: np.ndarray, vocab: int | None) -> np.ndarray:
    if array.dtype.kind not in "iu":
        raise ValueError(f"{source}: token ids must be integers, got dtype {array.dtype}")
    if array.ndim not in (1, 2) or array.shape[-1] == 0:
        raise ValueError(
            f"{source}: token ids of shape {list(array.shape)}; give [seq] (one sample) or "
            "[batch, seq] (a batch), at least one token each"
        )
    if vocab is not None and (array.min() < 0 or array.max() >= vocab):
        bad = int(array.min()) if array.min() < 0 else int(array.max())
        raise ValueError(f"{source}: token id {bad} is outside the vocabulary (ids 0–{vocab - 1})")
    return array.astype(np.int64).reshape(-1, array.shape[-1])


def read_ids(path: str | os.PathLike, vocab: int | None = None) -> list[np.ndarray]:
    """The batches of ids [n, seq] a ``.npy`` or ``.json`` file holds (one per length of a JSON list)."""
    path = Path(path)
    if path.suffix.lower() not in TOKEN_SUFFIXES:
        raise ValueError(
            f"{path}: token ids come as .npy (int [batch, seq] or [seq]) or .json (a list of ids or a list of lists)"
        )
    try:
        if path.suffix.lower() == ".npy":
            return [_read_npy_ids(path, vocab)]
        _check_file_size(path, MAX_TOKEN_JSON_BYTES, f"{path}: JSON token ids")
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as err:
        if "token id" in str(err) or "token ids" in str(err):
            raise
        raise ValueError(f"{path}: cannot read the token ids ({err})") from None
    rows = data if isinstance(data, list) and data and all(isinstance(r, list) for r in data) else [data]
    if not all(isinstance(r, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in r) for r in rows):
        raise ValueError(f"{path}: a JSON file of token ids holds a list of integers or a list of such lists")
    try:
        arrays = [np.asarray(r, np.int64) for r in rows]
    except OverflowError:
        raise ValueError(f"{path}: a token id beyond the int64 range, outside any vocabulary") from None
    return [_check_ids(str(path), ids, vocab) for ids in arrays]


def side_input_fill(name: str) -> int:
    """What an integer input beside the token ids is filled with: 1 for a mask (nothing masked), else 0."""
    return 1 if "mask" in name.lower() else 0


def _feeds(explainer: Explainer, name: str, ids: np.ndarray) -> dict[str, np.ndarray]:
    """The token ids, and the other integer inputs filled (side_input_fill)."""
    feeds = {name: ids}
    for other in explainer.input_names:
        if other != name:
            feeds[other] = np.full(ids.shape, side_input_fill(other), np.int64)
    return feeds


def _colours(relevance: np.ndarray) -> np.ndarray:
    m = float(np.abs(relevance).max()) if relevance.size else 0.0
    return _to_uint8(_colorize(relevance / m if m > 0 else np.zeros_like(relevance), "bwr"))


def _words(ids: np.ndarray, vocabulary: Sequence[str] | None) -> list[str]:
    return [vocabulary[i] if vocabulary is not None else str(i) for i in ids.tolist()]


def html_page(title: str, ids: np.ndarray, relevance: np.ndarray, vocabulary: Sequence[str]) -> str:
    """The tokens as coloured spans, the id and relevance of each on hover."""
    spans = []
    for i, word, r, rgb in zip(ids.tolist(), _words(ids, vocabulary), relevance.tolist(), _colours(relevance)):
        colour = "#{:02x}{:02x}{:02x}".format(*rgb)
        spans.append(f'<span title="id {i}: relevance {r:.6g}" style="background:{colour}">{html.escape(word)}</span>')
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>' + html.escape(title) + "</title>\n"
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:2}"
        "span{padding:0.15em 0.2em;margin:0 1px;border-radius:3px}</style></head>\n<body><h1>"
        + html.escape(title)
        + "</h1>\n<p>red: relevance for the explained unit, blue: against it (scaled by "
        f"max |R| = {float(np.abs(relevance).max()):.6g}); hover a token for its value</p>\n<p>"
        + " ".join(spans)
        + "</p>\n</body></html>\n"
    )


def save_png(
    path: Path, title: str, ids: np.ndarray, relevance: np.ndarray, vocabulary: Sequence[str], width: int = 800
) -> None:
    """The tokens as boxes coloured by relevance, wrapped to ``width`` pixels, with a legend below."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line, pad, x, y, boxes = 22, 4, 8, 34, []
    for word, rgb in zip(_words(ids, vocabulary), _colours(relevance)):
        w = int(measure.textlength(word, font=font)) + 2 * pad
        if x + w > width - 8 and x > 8:
            x, y = 8, y + line + 4
        boxes.append((x, y, w, word, tuple(int(c) for c in rgb)))
        x += w + 4
    picture = Image.new("RGB", (width, y + line + 60), "white")
    draw = ImageDraw.Draw(picture)
    draw.text((8, 8), title, fill="black", font=font)
    for bx, by, w, word, rgb in boxes:
        draw.rectangle([bx, by, bx + w, by + line], fill=rgb, outline=(200, 200, 200))
        draw.text((bx + pad, by + 5), word, fill="black", font=font)
    legend_y, m = y + line + 16, float(np.abs(relevance).max())
    ramp = _to_uint8(_colorize(np.linspace(-1, 1, 256), "bwr"))
    for k, rgb in enumerate(ramp):
        draw.line([(8 + k, legend_y), (8 + k, legend_y + 12)], fill=tuple(int(c) for c in rgb))
    draw.text((272, legend_y), f"-{m:.3g} (against) … 0 … +{m:.3g} (for)", fill="black", font=font)
    picture.save(path, format="PNG")


def _prediction(outputs: dict, position: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(predicted unit, score) per sample from the first output: [batch, classes] or [batch, seq, vocab]."""
    values = next(iter(outputs.values()), None)
    if values is None or values.ndim not in (2, 3):
        return None
    scores = values if values.ndim == 2 else values[:, position]
    return scores.argmax(1), scores.max(1)


def _named_batches(files: list, taken: set):
    """(path, ids [n, seq], [(unique name, index in the file)…]) per batch: ``stem`` for a file of one
    sample, ``stem_K`` for sample K of a file of several (names as lrpc_runtime.inputs gives them)."""
    for path, batches in files:
        total, start = sum(len(b) for b in batches), 0
        width = len(str(total - 1))
        for ids in batches:
            names = [
                (_unique(path.stem if total == 1 else f"{path.stem}_{start + i:0{width}d}", taken), start + i)
                for i in range(len(ids))
            ]
            start += len(ids)
            yield path, ids, names


def explain_token_files(
    explainer: Explainer,
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    tokens: str | os.PathLike | None = None,
    target: Any = None,
    table: str = "csv",
    overwrite: bool = False,
    model_path: str | os.PathLike | None = None,
) -> list[dict]:
    """Explain the token ids in ``inputs`` and write the table (and, with ``tokens``, HTML and PNG pages)."""
    found = token_input(explainer)
    if found is None:
        raise ValueError("the file has no token-id input (compile a model whose integer input feeds an embedding)")
    name, vocab = found
    guard_inputs(Path(out_dir), [*inputs, *([tokens] if tokens else []), *([model_path] if model_path else [])])
    check_out_dir(Path(out_dir), overwrite)
    vocabulary = load_vocabulary(tokens) if tokens is not None else None
    if vocabulary is not None:
        vocab = len(vocabulary) if vocab is None else min(vocab, len(vocabulary))
    if not inputs:
        raise ValueError("give at least one .npy or .json file of token ids")
    files = [(Path(p), read_ids(p, vocab)) for p in inputs]
    position = int(explainer.metadata.extra.get(KEY_POSITION, "-1"))
    rows, taken = [], set()
    with staged_folder(Path(out_dir), overwrite) as staging:
        for path, ids, names in _named_batches(files, taken):
            given = None if target is None else np.full(len(ids), int(target), np.int64)
            result = explainer.explain(_feeds(explainer, name, ids), target=given)
            relevance = result.relevance[name].astype(np.float64)
            predicted = _prediction(result.outputs, position)
            for i, (stem, index) in enumerate(names):
                row = {
                    "input": stem,
                    "source": str(path),
                    "index": index,
                    "tokens": len(ids[i]),
                    "target": "input"
                    if target is None and explainer.target_mode == "input"
                    else (int(target) if target is not None else explainer.target_mode),
                    "relevance_sum": float(relevance[i].sum()),
                    "relevance": relevance[i].tolist(),
                }
                if predicted is not None:
                    row.update(predicted=int(predicted[0][i]), score=float(predicted[1][i]))
                if vocabulary is not None:
                    title = f"{stem}: relevance per token ({explainer.rule}, target {row['target']})"
                    (staging / f"{stem}.html").write_text(
                        html_page(title, ids[i], relevance[i], vocabulary), encoding="utf-8"
                    )
                    save_png(staging / f"{stem}.png", title, ids[i], relevance[i], vocabulary)
                    row.update(html=f"{stem}.html", png=f"{stem}.png", text=_words(ids[i], vocabulary))
                rows.append(row)
        _write_table(staging, rows, table)
    return rows


COLUMNS = (
    "input",
    "source",
    "index",
    "tokens",
    "predicted",
    "score",
    "target",
    "relevance_sum",
    "relevance",
    "html",
    "png",
)


def _write_table(folder: Path, rows: list[dict], table: str) -> None:
    if table == "json":
        (folder / "predictions.json").write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
        return
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        cells = {k: ("" if row.get(k) is None else row.get(k)) for k in COLUMNS}
        cells["relevance"] = " ".join(f"{r:.6g}" for r in row["relevance"])
        writer.writerow(cells)
    (folder / "predictions.csv").write_text(buffer.getvalue(), encoding="utf-8")
