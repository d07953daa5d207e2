"""Hostile files for the runaway-size tests, written without ever holding the size they claim: a PNG
whose header says 30000×30000 (its rows are zlib-compressed zeros, streamed), a `.npy` whose header
claims more than its data, a sparse `.npy` that is large and valid, a sparse vocabulary, and small
explained models whose inputs make runaway sizes reachable (fixed 3-channel, free height and width,
the same said to be 100000×100000, a 1-D signal)."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import lrpc


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(path: Path, width: int, height: int) -> Path:
    """A valid all-black 1-bit PNG of width × height, compressed row by row (never held whole)."""
    packer, row = zlib.compressobj(9), b"\0" * (1 + (width + 7) // 8)  # filter byte + packed bits
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b""))
    return path


def npy_header(shape: tuple, descr: str = "<f4") -> bytes:
    """The bytes of a version-1 .npy header for an array of `shape` (C order)."""
    text = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {tuple(shape)!r}, }}"
    text += " " * (63 - (len(text) + 10) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode()


def lying_npy(path: Path, shape: tuple, descr: str = "<f4", data: int = 1024) -> Path:
    """A .npy whose header claims `shape` but that holds only `data` bytes."""
    path.write_bytes(npy_header(shape, descr) + b"\0" * data)
    return path


def sparse_npy(path: Path, shape: tuple, descr: str = "<f4") -> Path:
    """A valid .npy of zeros of `shape`, its data a hole in the file (no disk, no memory)."""
    header = npy_header(shape, descr)
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(len(header) + int(np.prod(shape)) * np.dtype(descr).itemsize)
    return path


def json_ids(path: Path, count: int) -> Path:
    """A JSON list of `count` token ids, written a million at a time."""
    with open(path, "w") as out:
        out.write("[0")
        for start in range(1, count, 10**6):
            out.write(",1" * min(10**6, count - start))
        out.write("]")
    return path


def json_text(path: Path, value) -> Path:
    path.write_text(json.dumps(value))
    return path


def sparse_text(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.write(b"a\n")
        f.truncate(size)
    return path


def _net(shape: list, spatial: int) -> onnx.ModelProto:
    """Conv-Relu-GlobalMaxPool-Flatten-Gemm on an input of `shape` with `spatial` spatial axes."""
    rng = np.random.default_rng(0)
    channels = shape[1]
    kernel = [3] * spatial
    init = {
        "w1": rng.standard_normal((4, channels, *kernel)).astype(np.float32) * 0.3,
        "w2": rng.standard_normal((5, 4)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1] * 2 * spatial),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("GlobalMaxPool", ["r1"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "w2"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 5])],
        [numpy_helper.from_array(a, n) for n, a in init.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def source(path: Path, shape: list) -> Path:
    """`_net` on `shape`, saved as a plain ONNX model."""
    onnx.save(_net(shape, len(shape) - 2), path)
    return path


def explained(folder: Path, name: str, shape: list, preprocess: str | None = None) -> Path:
    """An explained file of `_net` on `shape` (3-D or 4-D: 1 or 2 spatial axes)."""
    path = folder / f"{name}.onnx"
    lrpc.compile(_net(shape, len(shape) - 2), output=path, preprocess=preprocess)
    return path


def with_input_dims(source: Path, target: Path, dims: dict[int, int]) -> Path:
    """A copy of an explained file whose graph input says fixed `dims` ({axis: size}) where it had free ones
    (lrpc compile itself would allocate an input-sized array for a 100000×100000 input)."""
    model = onnx.load(source)
    for axis, size in dims.items():
        model.graph.input[0].type.tensor_type.shape.dim[axis].dim_value = size
    onnx.save(model, target)
    return target


def with_metadata(source: Path, target: Path, key: str, value: str) -> Path:
    """A copy of an explained file with one lrpc.* metadata entry set to `value`."""
    model = onnx.load(source)
    entry = next((p for p in model.metadata_props if p.key == key), None) or model.metadata_props.add()
    entry.key, entry.value = key, value
    onnx.save(model, target)
    return target
