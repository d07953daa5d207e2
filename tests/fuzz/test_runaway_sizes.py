"""Runaway sizes from flags and files (issue 18): each case must end quickly with exit 2 and one line
`lrpc: error: …` naming the option or file, without allocating the size it asks for.

The cases run through size_driver.py: lrpc.cli.main in forked children whose data memory is capped at
1 GiB above what they start with, so an allocation of the asked-for size fails (exit 3, MemoryError)
rather than passing unnoticed or taking the machine down, and a runaway loop is killed after 20 s.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import hostile_inputs as make

pytestmark = pytest.mark.fuzz

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
HAVE_RAY = subprocess.run([sys.executable, "-c", "import ray.data"], capture_output=True).returncode == 0


def _files(d: Path) -> dict[str, Path]:
    """Models and inputs for the cases (see hostile_inputs)."""
    import lrpc
    import text_models

    f = {
        "rgb": make.explained(d, "rgb", ["batch", 3, 8, 8]),
        "free": make.explained(d, "free", ["batch", 3, "h", "w"]),
        "images": d / "images",
        "cls": d / "cls.onnx",
        "source": ROOT / "models" / "digits_cnn.onnx",
    }
    f["vast_source"] = make.source(d / "vast_source.onnx", ["batch", 3, 100_000, 100_000])
    f["vast"] = make.with_input_dims(f["free"], d / "vast.onnx", {2: 100_000, 3: 100_000})
    f["resize_in_file"] = make.with_metadata(
        f["rgb"], d / "resize_in_file.onnx", "lrpc.preprocess", '{"resize":[100000,100000]}'
    )
    f["images"].mkdir()
    for i in range(2):
        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(f["images"] / f"p{i}.png")
    lrpc.compile(text_models.classifier(mask=True)[0], "epsilon", output=f["cls"])
    f["bomb"] = make.bomb_png(d / "bomb.png", 30_000, 30_000)  # 900 M pixels in ~110 kB
    f["bomb100"] = make.bomb_png(d / "bomb100.png", 10_000, 10_000)  # 100 M: Pillow only warns
    f["lying"] = make.lying_npy(d / "lying.npy", (100_000_000, 3, 8, 8))
    f["lying_ids"] = make.lying_npy(d / "lying_ids.npy", (1, 10**12), "<i8")
    f["big_valid"] = make.sparse_npy(d / "big_valid.npy", (64, 3, 2048, 2048))  # 3 GiB of zeros, sparse
    f["many_ids"] = make.json_ids(d / "many_ids.json", 10**8)  # 200 MB
    f["far_ids"] = make.json_text(d / "far_ids.json", [1, 2, 10**15])
    f["beyond_ids"] = make.json_text(d / "beyond_ids.json", [1, 2, 10**30])
    f["vocab"] = make.sparse_text(d / "vocab.txt", 16 << 30)
    return f


def _explain(f, out, *more):
    return ["explain", f["rgb"], f["images"], "-o", out, "-q", *more]


def _bench(f, *more):
    return ["bench", f["source"], "--no-memory", *more]


# id → (argv from the files and the output path, the exit status, text the error line must hold)
CASES = {
    "batch-size 10**12": (lambda f, o: _explain(f, o, "--batch-size", 10**12), 2, "--batch-size"),
    "batch-size 0": (lambda f, o: _explain(f, o, "--batch-size", 0), 2, "--batch-size"),
    "batch-size -1": (lambda f, o: _explain(f, o, "--batch-size", -1), 2, "--batch-size"),
    "resize flag": (lambda f, o: _explain(f, o, "--preprocess", "resize=100000,100000"), 2, "resize"),
    "resize in the file": (lambda f, o: ["explain", f["resize_in_file"], f["images"], "-o", o], 2, "resize"),
    "model input 100000x100000": (lambda f, o: ["explain", f["vast"], f["images"], "-o", o], 2, "100000"),
    "bomb png 900M pixels": (lambda f, o: ["explain", f["rgb"], f["bomb"], "-o", o], 2, "bomb.png"),
    "bomb png 100M pixels": (lambda f, o: ["explain", f["rgb"], f["bomb100"], "-o", o], 2, "bomb100.png"),
    "npy header lies": (lambda f, o: ["explain", f["rgb"], f["lying"], "-o", o], 2, "header claims"),
    "npy large, wrong shape": (lambda f, o: ["explain", f["rgb"], f["big_valid"], "-o", o], 2, "big_valid.npy"),
    "npy large vs batch-size": (
        lambda f, o: ["explain", f["free"], f["big_valid"], "-o", o, "--batch-size", 64],
        2,
        "--batch-size",
    ),
    "target npy header lies": (lambda f, o: _explain(f, o, "--target", f["lying"]), 2, "header claims"),
    "overlay-alpha nan": (lambda f, o: _explain(f, o, "--overlay-alpha", "nan"), 2, "--overlay-alpha"),
    "overlay-alpha 2": (lambda f, o: _explain(f, o, "--overlay-alpha", 2, "--style", "overlay"), 2, "--overlay-alpha"),
    "overlay-alpha -1": (lambda f, o: _explain(f, o, "--overlay-alpha", -1), 2, "--overlay-alpha"),
    "token json 10**8 ids": (lambda f, o: ["explain", f["cls"], f["many_ids"], "-o", o], 2, "many_ids.json"),
    "token id out of vocabulary": (
        lambda f, o: ["explain", f["cls"], f["far_ids"], "-o", o],
        2,
        "outside the vocabulary",
    ),
    "token id beyond int64": (lambda f, o: ["explain", f["cls"], f["beyond_ids"], "-o", o], 2, "beyond_ids.json"),
    "token npy header lies": (lambda f, o: ["explain", f["cls"], f["lying_ids"], "-o", o], 2, "header claims"),
    "vocabulary 16 GiB": (
        lambda f, o: ["explain", f["cls"], f["far_ids"], "-o", o, "--tokens", f["vocab"]],
        2,
        "--tokens",
    ),
    "bench batch 10**8": (lambda f, o: _bench(f, "--batch", "1,100000000"), 2, "--batch"),
    "bench repeats 10**12": (lambda f, o: _bench(f, "--repeats", 10**12), 2, "--repeats"),
    "bench warmup 10**12": (lambda f, o: _bench(f, "--warmup", 10**12), 2, "--warmup"),
    "bench input 100000x100000": (lambda f, o: ["bench", f["vast_source"], "--no-memory"], 2, "--batch 1"),
    "bench threads 10**6": (lambda f, o: _bench(f, "--threads", 10**6), 2, "--threads"),
    "actors 10**9": (lambda f, o: _explain(f, o, "--ray", "--actors", 10**9), 2, "--actors"),
}


def drive(cases: dict[str, list], folder: Path) -> dict:
    """What each command line did (size_driver.py), run in `folder`."""
    (folder / "cases.json").write_text(json.dumps({k: [str(a) for a in v] for k, v in cases.items()}))
    done = subprocess.run(
        [sys.executable, str(HERE / "size_driver.py"), str(folder / "cases.json")],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict:
    """What every case did, all run in one driver."""
    d = tmp_path_factory.mktemp("runaway")
    f = _files(d)
    chosen = {k: v for k, v in CASES.items() if HAVE_RAY or "--ray" not in map(str, v[0](f, "out"))}
    done = drive({k: build(f, str(d / f"out{i}")) for i, (k, (build, _, _)) in enumerate(chosen.items())}, d)
    f["many_ids"].unlink()  # the one file that takes disk space
    return done


@pytest.mark.parametrize("case", list(CASES))
def test_a_runaway_size_is_refused_in_one_line(outcomes, case):
    if case not in outcomes:
        pytest.skip("needs Ray Data (pip install 'lrpc[ray]')")
    _, status, words = CASES[case]
    got = outcomes[case]
    assert got["status"] == status, got
    lines = got["stderr"].splitlines()
    assert len(lines) == 1 and lines[0].startswith("lrpc: error: ") and words in lines[0], got["stderr"]
    assert got["seconds"] < 10, got


def test_a_long_thin_sample_gets_a_heatmap_of_bounded_size(tmp_path):
    """A [1, 16000] signal: the default upscaling (to 128 px on the short side) would make a 128 × 2 048 000
    picture; it is held to 16.7 M pixels."""
    model = make.explained(tmp_path, "signal", ["batch", 1, 16000])
    np.save(tmp_path / "wave.npy", np.sin(np.arange(16000, dtype=np.float32) / 50)[None])
    got = drive(
        {"signal": ["explain", model, tmp_path / "wave.npy", "-o", tmp_path / "out", "-q", "--style", "heatmap"]},
        tmp_path,
    )["signal"]
    assert got["status"] == 0, got
    with Image.open(tmp_path / "out" / "wave.png") as picture:
        width, height = picture.size
    assert width * height <= 4096 * 4096 and height == math.isqrt(4096 * 4096 // 16000) and width == 16000 * height


def test_a_model_with_a_vast_input_compiles_without_allocating_it(tmp_path):
    """[batch, 3, 100000, 100000]: compile builds nothing input-sized (the input-normalization pass used to
    allocate two float64 arrays of one sample, 480 GB)."""
    source = make.source(tmp_path / "vast.onnx", ["batch", 3, 100_000, 100_000])
    got = drive({"compile": ["compile", source, "-o", tmp_path / "out.onnx"]}, tmp_path)["compile"]
    assert got["status"] == 0, got
