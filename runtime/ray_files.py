"""``lrpc explain --ray``: the files of :func:`~lrpc_runtime.explain_files`, explained on a Ray cluster.

The driver plans the run as the local path does (:func:`~lrpc_runtime.files.plan_files`: the samples
and their preprocessing) and turns the sample list into a Ray Dataset of (position, name, file, index)
rows, one block per batch so that every actor gets work. A pool of actors
(``ray.data.ActorPoolStrategy``) maps it: each actor opens one onnxruntime session and, for each batch,
runs :func:`~lrpc_runtime.files.explain_chunk` — the function the local path runs — writing
``NAME.png`` (and ``NAME.relevance.npy``) into the staging folder beside ``out_dir``. The table rows come
back to the driver, which puts them in input order, writes ``predictions.csv`` (or ``.json``) and publishes
the staging folder with one rename: all or nothing, as locally (a non-empty ``out_dir`` only with
``overwrite``). Ray is shut down (a local cluster) before the staging folder is removed after a failure, so
no actor writes into it afterwards.

Actors write where they run, so on a cluster of several machines the inputs, the model and the folder
that holds ``out_dir`` must be at the same path on every node (shared storage such as NFS). Ray itself is
an optional extra (``pip install "lrpc[ray]"``), imported only when this runs.

Example::

    >>> rows = explain_files_ray("digits_explained.onnx", ["digits/"], "heatmaps/", actors=2)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .files import (
    FilePlan,
    SampleWriting,
    check_arguments,
    explain_chunk,
    model_paths,
    plan_files,
    staged_output,
    write_table,
)
from .inputs import SampleRef
from .limits import MAX_ACTORS, MAX_THREADS, bounded_int
from .preprocess import Preprocessing
from .progress import Progress
from .session import Explainer

__all__ = ["RayNotInstalledError", "explain_files_ray"]

INSTALL_HINT = 'pip install "lrpc[ray]"'


class RayNotInstalledError(ImportError):
    """``explain_files_ray`` was called where Ray Data is not installed."""


def import_ray():
    """The ``ray`` module with Ray Data loaded; :class:`RayNotInstalledError` when it is missing."""
    try:
        import ray
        import ray.data  # noqa: F401  (the Dataset API lives in a submodule)
    except ImportError as err:
        raise RayNotInstalledError(f"--ray needs Ray Data, which is not installed ({err}): {INSTALL_HINT}") from None
    return ray


class ChunkWorker:
    """One Ray actor: one onnxruntime session, reused for every batch of samples the actor is given."""

    def __init__(
        self,
        model: str | bytes,
        device: str,
        threads: int,
        batch_size: int,
        plan: FilePlan,
        target: Any,
        folder: str,
        writing: SampleWriting,
        low_memory: bool = False,
    ) -> None:
        self.explainer = Explainer(model, device=device, threads=threads, batch_size=batch_size, low_memory=low_memory)
        self.plan, self.target, self.folder, self.writing = plan, target, Path(folder), writing

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        refs = [
            SampleRef(str(name), str(file), None if index < 0 else int(index))
            for name, file, index in zip(batch["name"], batch["file"], batch["index"])
        ]
        rows = explain_chunk(self.explainer, refs, self.plan, self.target, self.folder, self.writing)
        return {"position": batch["position"], "row": np.array([json.dumps(row) for row in rows], dtype=object)}


def sample_items(refs: Sequence[SampleRef]) -> list[dict]:
    """The Dataset rows: each sample's place in the table, its output name, its file (absolute: actors run
    elsewhere) and its index in a batch array (-1: the whole file)."""
    return [
        {
            "position": i,
            "name": ref.name,
            "file": os.path.abspath(ref.source),
            "index": -1 if ref.index is None else ref.index,
        }
        for i, ref in enumerate(refs)
    ]


def ordered_rows(results: Sequence[tuple[int, str]], refs: Sequence[SampleRef]) -> list[dict]:
    """The table rows in input order, with each ``source`` as the caller named it (not the absolute path)."""
    rows = []
    for position, text in sorted(results):
        row = json.loads(text)
        row["source"] = refs[position].source
        rows.append(row)
    return rows


def user_error(error: BaseException, ray) -> BaseException | None:
    """The ValueError or OSError an actor raised, unwrapped from Ray's exceptions (None: not one)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, (ValueError, OSError)) and not isinstance(error, ray.exceptions.RayError):
            if error.args and isinstance(error.args[0], str):  # Ray Data appends lines about retries
                error.args = (error.args[0].split("\n")[0], *error.args[1:])
            return error
        cause = getattr(error, "cause", None) if isinstance(error, ray.exceptions.RayTaskError) else None
        error = cause or error.__cause__ or error.__context__
    return None


def block_count(samples: int, batch_size: int, actors: int) -> int:
    """Blocks to split the samples into: one per batch, and at least one per actor (a block goes to one
    actor, so fewer blocks than actors leave actors idle), never more than there are samples."""
    return max(1, min(samples, max(math.ceil(samples / batch_size), actors)))


@contextmanager
def ray_connection(ray, address: str | None, local_cpus: int) -> Iterator[None]:
    """Ray as found: the caller's if already initialized, else ``address``'s cluster, else a local one
    with ``local_cpus`` CPUs, shut down afterwards."""
    if ray.is_initialized():
        yield
        return
    options = {"address": address} if address else {"num_cpus": local_cpus, "include_dashboard": False}
    ray.init(**options, log_to_driver=False, logging_level=logging.WARNING)
    try:
        yield
    finally:
        ray.shutdown()


@contextmanager
def ray_data_settings(ray) -> Iterator[None]:
    """For our run, restored after: no Ray Data progress bars or INFO lines (our own bar counts samples),
    and an actor's own exception (a ValueError naming a bad file) raised as itself, not as a wrapper."""
    context = ray.data.DataContext.get_current()
    logger = logging.getLogger("ray.data")
    saved = context.enable_progress_bars, context.raise_original_map_exception, logger.level
    context.enable_progress_bars, context.raise_original_map_exception = False, True
    logger.setLevel(logging.CRITICAL)  # a failed task's traceback: the exception we raise says it in one line
    try:
        yield
    finally:
        context.enable_progress_bars, context.raise_original_map_exception, level = saved
        logger.setLevel(level)


def explain_files_ray(
    model: str | os.PathLike | bytes,
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    address: str | None = None,
    actors: int = 2,
    threads_per_actor: int = 1,
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
    """:func:`~lrpc_runtime.explain_files` on Ray: the same files in ``out_dir``, the same rows returned.

    A Ray already initialized in this process is used as it is; else ``address`` names a running
    cluster (``HOST:6379``, ``auto``, ``ray://HOST:10001``), and without it a local cluster is started
    for the run and shut down after (Ray 2.60 then writes an auth token into ``~/.ray`` unless
    ``RAY_AUTH_MODE=disabled``). ``actors`` sessions run at once, each with ``threads_per_actor`` onnxruntime
    threads and as many Ray CPUs (and one GPU each with ``device="cuda"``). The other arguments are
    :func:`~lrpc_runtime.explain_files`'s. On several machines, the model, the inputs and ``out_dir``'s
    folder must be on storage every node sees at the same path.

    Example::

        >>> rows = explain_files_ray("explained.onnx", ["images/"], "out", address="auto", actors=8)  # doctest: +SKIP
    """
    bounded_int("--actors (actors)", actors, 1, MAX_ACTORS)
    bounded_int("threads_per_actor", threads_per_actor, 1, MAX_THREADS)
    out_dir = check_arguments(
        style,
        table,
        out_dir,
        inputs=[*inputs, *model_paths(model)],
        overwrite=overwrite,
        overlay_alpha=overlay_alpha,
        batch_size=batch_size,
    )
    ray = import_ray()
    model = model if isinstance(model, (bytes, bytearray)) else os.path.abspath(model)
    plan = plan_files(Explainer(model, threads=1, batch_size=batch_size), inputs, preprocess)
    worker_plan = dataclasses.replace(plan, refs=[])  # each actor gets its samples from the Dataset
    local_cpus = max(os.cpu_count() or 1, actors * threads_per_actor)
    with staged_output(out_dir, overwrite) as staging, ray_connection(ray, address, local_cpus), ray_data_settings(ray):
        blocks = block_count(len(plan.refs), batch_size, actors)
        dataset = ray.data.from_items(sample_items(plan.refs), override_num_blocks=blocks)
        explained = dataset.map_batches(
            ChunkWorker,
            batch_size=batch_size,
            compute=ray.data.ActorPoolStrategy(size=min(actors, blocks)),
            num_cpus=threads_per_actor,
            num_gpus=1 if device.startswith("cuda") else None,
            fn_constructor_args=(
                model,
                device,
                threads_per_actor,
                batch_size,
                worker_plan,
                target,
                str(staging.resolve()),
                SampleWriting(style, overlay_alpha, save_relevance),
                low_memory,
            ),
        )
        results: list[tuple[int, str]] = []
        try:
            with Progress(len(plan.refs), "explaining", enabled=progress) as bar:
                for batch in explained.iter_batches(batch_size=None, batch_format="numpy"):
                    results += zip(batch["position"].tolist(), batch["row"].tolist())
                    bar.advance(len(batch["position"]))
        except Exception as err:
            cause = user_error(err, ray)
            if cause is None:
                raise
            raise cause from None
        rows = ordered_rows(results, plan.refs)
        write_table(staging, rows, table)
    return rows
