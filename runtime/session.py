"""Run an explained ONNX graph: model outputs and LRP relevance in one call.

An explained file (written by ``lrpc compile``) returns the original model
outputs followed by one relevance output per explained input, and carries
``lrpc.*`` metadata (see :mod:`lrpc_runtime.metadata`).

Example::

    >>> ex = Explainer("model.explained.onnx")            # doctest: +SKIP
    >>> result = ex.explain(images)                        # doctest: +SKIP
    >>> result.output.argmax(1), result.relevance_map.shape  # doctest: +SKIP
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import onnxruntime as ort

from .errors import DeviceUnavailableError, NotExplainedError
from .feeds import InputSpec, batch_size_of, ort_dtype, prepare_inputs, prepare_target
from .limits import MAX_BATCH_SIZE, MAX_THREADS, bounded_int
from .metadata import (
    KEY_EXECUTION_ORDER,
    KEY_RELEVANCE_OUTPUTS,
    MASK_INPUT_NAME,
    TARGET_INPUT_NAME,
    ExplainedMetadata,
    parse_metadata,
    read_file_metadata,
)

__all__ = ["Explainer", "Explanation"]

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
# onnxruntime packs a constant weight for each node that reads it (a dense layer: once for Wx, once for
# Wᵀs); this session option keeps the weights as stored instead (Explainer(low_memory=True)).
NO_PREPACKING = "session.disable_prepacking"

ModelSource = Union[str, os.PathLike, bytes]
ProviderSpec = Union[str, tuple[str, dict[str, Any]]]


@dataclass
class Explanation:
    """Result of :meth:`Explainer.explain`.

    ``outputs`` maps the original output names to arrays (graph order);
    ``relevance`` maps each explained input name to its relevance array,
    which has that input's shape.

    Example::

        >>> e = Explanation({"logits": np.zeros((1, 3))}, {"input": np.ones((1, 4))})
        >>> e.output.shape, e.relevance_map.shape
        ((1, 3), (1, 4))
    """

    outputs: dict[str, np.ndarray]
    relevance: dict[str, np.ndarray]

    @property
    def relevance_map(self) -> np.ndarray:
        """The relevance array when exactly one input is explained."""
        if len(self.relevance) != 1:
            raise ValueError(
                f"relevance_map needs exactly one explained input, this model has "
                f"{len(self.relevance)} ({list(self.relevance)}); use .relevance[name]"
            )
        return next(iter(self.relevance.values()))

    @property
    def output(self) -> np.ndarray:
        """The single (or first) model output."""
        if not self.outputs:
            raise ValueError("the model has no outputs besides the relevance")
        return next(iter(self.outputs.values()))


def _resolve_providers(device: str, providers: Sequence[ProviderSpec] | None) -> tuple[list[ProviderSpec], bool, str]:
    """Return (providers, CUDA requested?, how it was requested) for the session."""
    if providers is not None:
        chosen = list(providers)
        names = [p if isinstance(p, str) else p[0] for p in chosen]
        return chosen, CUDA_PROVIDER in names, f"providers={names}"
    dev = str(device).strip().lower()
    if dev == "cpu":
        return [CPU_PROVIDER], False, 'device="cpu"'
    if dev == "cuda":
        return [CUDA_PROVIDER, CPU_PROVIDER], True, 'device="cuda"'
    if dev.startswith("cuda:") and dev[5:].isdigit():
        options = {"device_id": int(dev[5:])}
        return [(CUDA_PROVIDER, options), CPU_PROVIDER], True, f'device="{dev}"'
    raise ValueError(f'device must be "cpu", "cuda" or "cuda:<id>", got {device!r}')


def _described_outputs(meta: ExplainedMetadata) -> dict:
    """``lrpc.relevance_outputs`` (files with token-id inputs): every relevance output, the per-feature
    map of a token input included, so none of them counts as a model output."""
    try:
        described = json.loads(meta.extra.get(KEY_RELEVANCE_OUTPUTS, "{}") or "{}")
    except json.JSONDecodeError:
        return {}
    return described if isinstance(described, dict) else {}


def _cuda_error(requested: str, available: Sequence[str], detail: str) -> DeviceUnavailableError:
    """Build the error raised when CUDA was asked for but cannot be used."""
    return DeviceUnavailableError(
        f"CUDA was requested ({requested}) but {detail}. Available onnxruntime "
        f"providers: {list(available)}. Install the GPU wheel with "
        '`pip install "lrpc[cuda]"` (onnxruntime-gpu; uninstall the CPU-only '
        '`onnxruntime` wheel first) and a matching CUDA/cuDNN, or pass device="cpu".'
    )


def in_recorded_order(options: ort.SessionOptions, model: bytes | str) -> ort.SessionOptions:
    """`options` set to run `model` in its file's node order where the file records that this keeps less
    alive than onnxruntime's own walk (``lrpc.execution_order``, compiler/schedule.py; ViT-Tiny AttnLRP at
    batch 16: 815 → 434 MB, benchmarks/PROFILE.md §14). Read from the file, before the session exists."""
    if read_file_metadata(model).get(KEY_EXECUTION_ORDER) == "file":
        options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    return options


class Explainer:
    """An onnxruntime session over an explained ONNX graph.

    ``model`` is a path or the serialized model bytes. ``device`` is ``"cpu"``
    or ``"cuda"`` (``"cuda:<id>"`` picks a GPU); an explicit ``providers``
    list overrides it. CUDA never falls back silently to the CPU:
    :class:`DeviceUnavailableError` is raised instead. ``threads`` sets
    ``intra_op_num_threads``; ``batch_size`` is the largest chunk
    :meth:`explain` sends to the session at once. ``low_memory`` turns off
    onnxruntime's weight prepacking: a dense layer's weights are then held once
    instead of packed for both Wx and Wᵀs (VGG-16: the README's "Speed").
    Without ``session_options`` the session runs with the memory-pattern planner
    off, and in the file's node order where the file says it keeps less alive so
    (``lrpc.execution_order``); given options are used as they are.

    Example::

        >>> ex = Explainer("digits.explained.onnx", batch_size=32)  # doctest: +SKIP
        >>> ex.input_names, ex.relevance_names                     # doctest: +SKIP
        (['input'], {'input': 'relevance'})
    """

    def __init__(
        self,
        model: ModelSource,
        device: str = "cpu",
        providers: Sequence[ProviderSpec] | None = None,
        batch_size: int = 64,
        threads: int | None = None,
        session_options: ort.SessionOptions | None = None,
        low_memory: bool = False,
    ) -> None:
        self.batch_size = bounded_int("batch_size", batch_size, 1, MAX_BATCH_SIZE)
        chosen, wants_cuda, requested = _resolve_providers(device, providers)
        available = ort.get_available_providers()
        if wants_cuda and CUDA_PROVIDER not in available:
            raise _cuda_error(requested, available, "this onnxruntime build has no CUDAExecutionProvider")
        options = session_options
        if options is None:
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            # The memory-pattern planner lays out every tensor of a run in one block: for an explained graph,
            # which keeps the forward activations for its backward pass, that block peaked 1.3 GB higher
            # (VGG-16 ε, batch 16: 4254 → 2910 MB) at no measured time cost (benchmarks/PROFILE.md §7).
            options.enable_mem_pattern = False
        if threads is not None:
            options.intra_op_num_threads = bounded_int("threads", threads, 0, MAX_THREADS)
        if low_memory:
            options.add_session_config_entry(NO_PREPACKING, "1")
        if isinstance(model, (bytes, bytearray)):
            source, payload = "<model bytes>", bytes(model)
        else:
            source = payload = os.fspath(model)
            if not os.path.isfile(source):
                raise FileNotFoundError(errno.ENOENT, "no such file", source)
        if session_options is None:
            in_recorded_order(options, payload)
        try:
            self._session = ort.InferenceSession(payload, sess_options=options, providers=chosen)
        except Exception as err:  # onnxruntime's error classes derive from Exception alone
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise NotExplainedError(f"{source}: onnxruntime cannot load it ({first_line})") from None
        meta = self._session.get_modelmeta().custom_metadata_map
        if wants_cuda and CUDA_PROVIDER not in self._session.get_providers():
            raise _cuda_error(
                requested,
                available,
                "onnxruntime dropped the CUDAExecutionProvider when creating the "
                "session (the CUDA or cuDNN libraries probably failed to load; see "
                "the onnxruntime warnings above)",
            )
        self._meta = parse_metadata(meta, source)
        self._load_signature(source)

    def _load_signature(self, source: str) -> None:
        """Read inputs/outputs from the session and check them against the metadata."""
        meta = self._meta
        graph_inputs = {i.name: i for i in self._session.get_inputs()}
        all_outputs = [o.name for o in self._session.get_outputs()]
        if meta.takes_target:
            target = graph_inputs.pop(TARGET_INPUT_NAME, None)
            if target is None or target.type != "tensor(int64)":
                raise NotExplainedError(
                    f"{source}: target mode is 'input' but the graph has no int64 input named {TARGET_INPUT_NAME!r}"
                )
        self._mask_spec = None
        if meta.target_mode == "mask":
            mask = graph_inputs.pop(MASK_INPUT_NAME, None)
            if mask is None:
                raise NotExplainedError(
                    f"{source}: target mode is 'mask' but the graph has no input named {MASK_INPUT_NAME!r}"
                )
            self._mask_spec = InputSpec(MASK_INPUT_NAME, tuple(mask.shape), ort_dtype(mask.type))
        self._specs = {
            name: InputSpec(name, tuple(arg.shape), ort_dtype(arg.type)) for name, arg in graph_inputs.items()
        }
        bad_inputs = [k for k in meta.relevance if k not in self._specs]
        bad_outputs = [v for v in meta.relevance.values() if v not in all_outputs]
        if bad_inputs or bad_outputs:
            raise NotExplainedError(
                f"{source}: lrpc.relevance {meta.relevance} does not match the graph "
                f"(inputs {list(self._specs)}, outputs {all_outputs})"
            )
        relevance_outputs = set(meta.relevance.values()) | set(_described_outputs(meta))
        self._output_names = [n for n in all_outputs if n not in relevance_outputs]
        self._all_outputs = all_outputs

    # ----------------------------------------------------------- properties
    @property
    def input_names(self) -> list[str]:
        """The original model inputs (the ``target`` input excluded)."""
        return list(self._specs)

    @property
    def input_shapes(self) -> dict[str, tuple]:
        """Each model input's shape as the graph declares it (a str or None for a free axis)."""
        return {name: spec.shape for name, spec in self._specs.items()}

    @property
    def mask_shape(self) -> tuple | None:
        """The shape of the ``mask`` input (files compiled with ``--target mask``), else ``None``."""
        return None if self._mask_spec is None else self._mask_spec.shape

    @property
    def output_names(self) -> list[str]:
        """The original model outputs, in graph order."""
        return list(self._output_names)

    @property
    def relevance_names(self) -> dict[str, str]:
        """Explained input name -> relevance output name."""
        return dict(self._meta.relevance)

    @property
    def target_mode(self) -> str:
        """``"max"``, ``"fixed:<k>"`` or ``"input"``."""
        return self._meta.target_mode

    @property
    def rule(self) -> str:
        """The LRP rule spec the file was compiled with."""
        return self._meta.rule

    @property
    def version(self) -> str:
        """The version of the compiler that wrote the file."""
        return self._meta.version

    @property
    def metadata(self) -> ExplainedMetadata:
        """All parsed ``lrpc.*`` metadata."""
        return self._meta

    @property
    def providers(self) -> list[str]:
        """The execution providers the session really uses, in priority order."""
        return list(self._session.get_providers())

    @property
    def session(self) -> ort.InferenceSession:
        """The underlying onnxruntime session."""
        return self._session

    def __repr__(self) -> str:
        return (
            f"Explainer(inputs={self.input_names}, outputs={self.output_names}, "
            f"rule={self.rule!r}, target={self.target_mode!r}, providers={self.providers})"
        )

    # ------------------------------------------------------------- running
    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Run the graph once on raw ``feeds``; return every output by name.

        No chunking and no casting: ``feeds`` must match the graph exactly
        (including the ``target`` input in ``"input"`` mode).

        Example::

            >>> ex.run({"input": x.astype("float32")})["relevance"]  # doctest: +SKIP
        """
        values = self._session.run(None, {k: np.asarray(v) for k, v in feeds.items()})
        return dict(zip(self._all_outputs, values))

    def _chunk_size(self, batch: int) -> int:
        """Chunk size for ``batch`` samples, honouring a fixed batch axis in the graph."""
        fixed = {s.static_batch for s in self._specs.values()} - {None}
        if not fixed:
            return self.batch_size
        if len(fixed) > 1:
            raise ValueError(f"the model's inputs have different fixed batch sizes {sorted(fixed)}")
        size = fixed.pop()
        if batch % size:
            raise ValueError(
                f"the model has a fixed batch size of {size}; the number of samples ({batch}) must be a multiple of it"
            )
        return size

    def explain(self, x: Any, target: Any = None) -> Explanation:
        """Compute the model outputs and the relevance of every explained input.

        ``x`` is one array (single-input models) or ``{input name: array}``;
        axis 0 is the batch, processed in chunks of at most ``batch_size``.
        ``target`` is ``None``, an int or one class index per sample; it is
        required for files compiled with ``--target input`` and rejected
        otherwise. For files compiled with ``--target mask`` it is the mask: an
        array of the explained tensor's shape (batch first) weighting its units.

        Example::

            >>> e = ex.explain(np.random.rand(10, 64), target=3)  # doctest: +SKIP
            >>> e.relevance_map.shape                            # doctest: +SKIP
            (10, 64)
        """
        arrays = prepare_inputs(x, self._specs)
        batch = batch_size_of(arrays)
        if self._mask_spec is not None:
            if target is None:
                raise ValueError(
                    "this file was compiled with `--target mask`: pass target= (the mask, an "
                    "array of the explained tensor's shape)"
                )
            arrays[MASK_INPUT_NAME] = prepare_inputs({MASK_INPUT_NAME: target}, {MASK_INPUT_NAME: self._mask_spec})[
                MASK_INPUT_NAME
            ]
            batch_size_of(arrays)  # the mask shares the batch size
            targets = None
        else:
            targets = prepare_target(target, batch, self.target_mode, self.metadata.classes)
        step = self._chunk_size(batch)
        pieces: list[dict[str, np.ndarray]] = []
        for start in range(0, batch, step):
            feeds = {name: a[start : start + step] for name, a in arrays.items()}
            if targets is not None:
                feeds[TARGET_INPUT_NAME] = targets[start : start + step]
            pieces.append(dict(zip(self._all_outputs, self._session.run(None, feeds))))
        merged = pieces[0] if len(pieces) == 1 else self._concat(pieces)
        return Explanation(
            outputs={name: merged[name] for name in self._output_names},
            relevance={i: merged[o] for i, o in self._meta.relevance.items()},
        )

    @staticmethod
    def _concat(pieces: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """Concatenate per-chunk results along axis 0."""
        merged = {}
        for name in pieces[0]:
            parts = [p[name] for p in pieces]
            if parts[0].ndim == 0:
                raise ValueError(
                    f"output {name!r} has no batch axis, so chunked results cannot be "
                    "joined; use a batch_size at least the number of samples"
                )
            merged[name] = np.concatenate(parts, axis=0)
        return merged
