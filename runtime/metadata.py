"""Read and validate the ``lrpc.*`` metadata of an explained ONNX file.

The compiler writes at least these four ``metadata_props`` entries; onnxruntime exposes them
as ``session.get_modelmeta().custom_metadata_map``:

``lrpc.version``
    the compiler version string
``lrpc.rule``
    the rule spec, e.g. ``"epsilon:eps=1e-06"``
``lrpc.target``
    ``"max"``, ``"fixed:<k>"`` (k a unit index, or ``i,j,…`` a multi-index), ``"input"``,
    ``"all"`` or ``"mask"``
``lrpc.relevance``
    JSON object: explained input name -> relevance output name

and, when the compiler recorded them, ``lrpc.preprocess`` (the image preprocessing spec as
JSON, see :mod:`lrpc_runtime.preprocess`), ``lrpc.output`` (the model output whose unit is
explained; absent for an inner tensor), ``lrpc.classes``, ``lrpc.convention``, ``lrpc.method``,
``lrpc.explained``, ``lrpc.source_sha256`` and ``lrpc.execution_order`` (``"file"`` where the file's
node order keeps markedly less alive than onnxruntime's default one: the Explainer then runs it so).

Example::

    >>> meta = parse_metadata({
    ...     "lrpc.version": "0.1.0", "lrpc.rule": "epsilon:eps=1e-06",
    ...     "lrpc.target": "fixed:3", "lrpc.relevance": '{"input": "relevance"}'})
    >>> meta.target_mode, meta.fixed_target, meta.relevance
    ('fixed:3', 3, {'input': 'relevance'})
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from .errors import NotExplainedError

__all__ = [
    "KEY_VERSION",
    "KEY_RULE",
    "KEY_TARGET",
    "KEY_RELEVANCE",
    "KEY_PREPROCESS",
    "KEY_OUTPUT",
    "KEY_RELEVANCE_OUTPUTS",
    "KEY_CLASSES",
    "KEY_CONVENTION",
    "KEY_METHOD",
    "KEY_EXPLAINED",
    "KEY_POSITION",
    "KEY_SOURCE_SHA256",
    "KEY_OPTIONS",
    "KEY_EXECUTION_ORDER",
    "TARGET_INPUT_NAME",
    "MASK_INPUT_NAME",
    "ExplainedMetadata",
    "parse_metadata",
    "read_file_metadata",
]

# The metadata_props keys of an explained file, each written once here (the compiler writes them,
# lrpc/metadata.py says what each holds).
KEY_VERSION = "lrpc.version"
KEY_RULE = "lrpc.rule"
KEY_TARGET = "lrpc.target"
KEY_RELEVANCE = "lrpc.relevance"
KEY_RELEVANCE_OUTPUTS = "lrpc.relevance_outputs"
KEY_PREPROCESS = "lrpc.preprocess"
KEY_OUTPUT = "lrpc.output"
KEY_CLASSES = "lrpc.classes"
KEY_CONVENTION = "lrpc.convention"
KEY_METHOD = "lrpc.method"
KEY_EXPLAINED = "lrpc.explained"
KEY_POSITION = "lrpc.position"
KEY_SOURCE_SHA256 = "lrpc.source_sha256"
KEY_OPTIONS = "lrpc.options"
KEY_EXECUTION_ORDER = "lrpc.execution_order"  # "file": the file's node order keeps less alive (compiler/schedule.py)
REQUIRED_KEYS = (KEY_VERSION, KEY_RULE, KEY_TARGET, KEY_RELEVANCE)

#: Name of the extra graph input added by ``lrpc compile --target input``.
TARGET_INPUT_NAME = "target"
#: Name of the extra graph input added by ``lrpc compile --target mask``.
MASK_INPUT_NAME = "mask"

_COMPILE_HINT = "compile the model with `lrpc compile` first"


@dataclass(frozen=True)
class ExplainedMetadata:
    """The parsed ``lrpc.*`` metadata of an explained graph.

    Example::

        >>> m = ExplainedMetadata("0.1.0", "z", "max", {"x": "relevance"})
        >>> m.fixed_target is None
        True
    """

    version: str
    rule: str
    target_mode: str
    relevance: dict[str, str]
    classes: int | None = None  # number of explained classes (``lrpc.classes``), when recorded
    preprocess: str | None = None  # ``lrpc.preprocess``: the image preprocessing spec (JSON)
    output: str | None = None  # ``lrpc.output``: the model output whose units are explained
    extra: dict[str, str] = field(default_factory=dict)  # every other ``lrpc.*`` entry, as stored

    @property
    def fixed_target(self) -> int | tuple[int, ...] | None:
        """The unit index of a ``"fixed:<k>"`` target mode (a tuple for ``fixed:i,j,…``), else ``None``."""
        if self.target_mode.startswith("fixed:"):
            index = tuple(int(k) for k in self.target_mode.split(":", 1)[1].split(","))
            return index[0] if len(index) == 1 else index
        return None

    @property
    def takes_target(self) -> bool:
        """Whether the graph has the extra ``target`` input (mode ``"input"``)."""
        return self.target_mode == "input"


def _check_target_mode(mode: str, source: str) -> None:
    """Raise :class:`NotExplainedError` unless ``mode`` is a known target mode."""
    if mode in ("max", "input", "all", "mask"):
        return
    if mode.startswith("fixed:"):
        if all(k.isdigit() for k in mode.split(":", 1)[1].split(",")):
            return
    raise NotExplainedError(
        f"{source}: unsupported {KEY_TARGET} value {mode!r}; expected 'max', "
        "'fixed:<k>' (k non-negative integers, comma-separated), 'input', 'all' or "
        "'mask'. The file may come from a newer lrpc compiler than this runtime."
    )


def _parse_relevance(text: str, source: str) -> dict[str, str]:
    """Parse the ``lrpc.relevance`` JSON object (input name -> output name)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise NotExplainedError(f"{source}: {KEY_RELEVANCE} is not valid JSON ({err}): {text!r}") from None
    if (
        not isinstance(value, dict)
        or not value
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
    ):
        raise NotExplainedError(
            f"{source}: {KEY_RELEVANCE} must be a non-empty JSON object mapping "
            f"input names to relevance output names, got {text!r}"
        )
    return dict(value)


def parse_metadata(meta: Mapping[str, str], source: str = "model") -> ExplainedMetadata:
    """Validate the custom metadata map of a session and return its lrpc part.

    ``source`` names the model in error messages (a path or ``"<bytes>"``).
    Raises :class:`NotExplainedError` when entries are missing or malformed.

    Example::

        >>> try:
        ...     parse_metadata({}, "plain.onnx")
        ... except NotExplainedError as err:
        ...     print(str(err)[:40])
        plain.onnx is not an explained lrpc mode
    """
    missing = [key for key in REQUIRED_KEYS if key not in meta]
    if len(missing) == len(REQUIRED_KEYS):
        raise NotExplainedError(
            f"{source} is not an explained lrpc model: it has none of the "
            f"metadata entries {', '.join(REQUIRED_KEYS)}; {_COMPILE_HINT} "
            "and load the file it writes."
        )
    if missing:
        raise NotExplainedError(
            f"{source} has incomplete lrpc metadata (missing {', '.join(missing)}); "
            f"the file is damaged or was edited; {_COMPILE_HINT} again."
        )
    mode = meta[KEY_TARGET].strip()
    _check_target_mode(mode, source)
    return ExplainedMetadata(
        version=meta[KEY_VERSION],
        rule=meta[KEY_RULE],
        target_mode=mode,
        relevance=_parse_relevance(meta[KEY_RELEVANCE], source),
        classes=int(meta[KEY_CLASSES]) if meta.get(KEY_CLASSES, "").isdigit() else None,
        preprocess=meta.get(KEY_PREPROCESS),
        output=meta.get(KEY_OUTPUT),
        extra={
            k: v
            for k, v in meta.items()
            if k.startswith("lrpc.") and k not in (*REQUIRED_KEYS, KEY_PREPROCESS, KEY_OUTPUT, KEY_CLASSES)
        },
    )


def _varint(data, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if byte < 0x80:
            return value, at


def _fields(data, start: int, end: int):
    """(field number, start, end) of each length-delimited field of the protobuf message in data[start:end];
    the other wire types are skipped, and nothing is copied (a graph field can be gigabytes)."""
    at = start
    while at < end:
        tag, at = _varint(data, at)
        wire = tag & 7
        if wire == 0:
            _, at = _varint(data, at)
        elif wire in (1, 5):
            at += 8 if wire == 1 else 4
        elif wire == 2:
            size, at = _varint(data, at)
            yield tag >> 3, at, at + size
            at += size
        else:
            raise ValueError(f"protobuf wire type {wire}")


MODEL_METADATA_PROPS = 14  # ModelProto.metadata_props: repeated StringStringEntryProto {key = 1, value = 2}


def read_file_metadata(model: bytes | str) -> dict[str, str]:
    """An ONNX file's metadata_props (a path or the model's bytes), read without parsing its graph: the
    top-level fields are walked and only field 14 is decoded. For the options a session needs before it is
    created (``lrpc.execution_order``). What is not a readable ModelProto gives {}: creating the session
    then says what is wrong with it."""
    import mmap

    try:
        if isinstance(model, (bytes, bytearray)):
            return _metadata_of(model)
        with open(model, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _metadata_of(data)
    except (OSError, ValueError, IndexError, UnicodeDecodeError):
        return {}


def _metadata_of(data) -> dict[str, str]:
    meta = {}
    for number, start, end in _fields(data, 0, len(data)):
        if number == MODEL_METADATA_PROPS:
            parts = {k: bytes(data[a:b]).decode() for k, a, b in _fields(data, start, end)}
            meta[parts.get(1, "")] = parts.get(2, "")
    return meta
