"""`lrpc explain --ray` and lrpc_runtime.explain_files_ray: a Ray Data job on a 2-CPU local cluster gives
the same files, relevance and predictions as the local explain_files; a failed job writes nothing; without
Ray the CLI says how to install it. The Ray tests skip where Ray is not installed (scripts/test.sh installs
it); the cluster's temp files stay under pytest's tmp dir and no auth token is written into $HOME."""

from __future__ import annotations

import csv
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from PIL import Image

from lrpc.cli import main
from lrpc_runtime import explain_files, explain_files_ray
from lrpc_runtime.inputs import SampleRef
from lrpc_runtime.ray_files import RayNotInstalledError, block_count, ordered_rows

ROOT = pathlib.Path(__file__).resolve().parents[2]
DIGITS = np.load(ROOT / "models" / "digits_test.npz")
ARRAY_SAMPLES, IMAGE_SAMPLES = 290, 10


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A local 2-CPU Ray for this module, its temp dir under pytest's; yields the cluster's address."""
    ray = pytest.importorskip("ray")
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_AUTH_MODE", "disabled")
        patch.setenv("HOME", str(home))
        context = ray.init(
            num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=str(tmp_path_factory.mktemp("ray"))
        )
        try:
            yield context.address_info["gcs_address"]
        finally:
            ray.shutdown()
    assert not (home / ".ray").exists()


@pytest.fixture(scope="module")
def digit_inputs(tmp_path_factory) -> list[pathlib.Path]:
    """300 test digits: 290 in one batch .npy, 10 as 64×64 PNGs in a folder (both reading paths)."""
    folder = tmp_path_factory.mktemp("digits")
    np.save(folder / "batch.npy", DIGITS["x"][:ARRAY_SAMPLES])
    images = folder / "images"
    images.mkdir()
    for i in range(ARRAY_SAMPLES, ARRAY_SAMPLES + IMAGE_SAMPLES):
        gray = Image.fromarray(np.rint(DIGITS["x"][i, 0] * 255).astype(np.uint8))
        gray.resize((64, 64), Image.Resampling.NEAREST).save(images / f"digit{i}.png")
    return [folder / "batch.npy", images]


def relevance_files(folder: pathlib.Path) -> dict[str, np.ndarray]:
    return {p.name: np.load(p) for p in sorted(folder.glob("*.relevance.npy"))}


def test_a_ray_job_gives_what_a_local_run_gives(ray_cluster, explained, digit_inputs, tmp_path):
    local = explain_files(
        explained, digit_inputs, tmp_path / "local", save_relevance=True, table="json", progress=False
    )
    on_ray = explain_files_ray(
        explained,
        digit_inputs,
        tmp_path / "ray",
        actors=2,
        batch_size=16,
        save_relevance=True,
        table="json",
        progress=False,
    )
    assert len(on_ray) == ARRAY_SAMPLES + IMAGE_SAMPLES
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == sorted(
        p.name for p in (tmp_path / "local").iterdir()
    )
    exact = ("input", "source", "index", "predicted", "target", "heatmap")
    assert [{k: r.get(k) for k in exact} for r in on_ray] == [{k: r.get(k) for k in exact} for r in local]
    assert json.loads((tmp_path / "ray" / "predictions.json").read_text())[0]["input"] == local[0]["input"]
    np.testing.assert_allclose(
        [r["relevance_sum"] for r in on_ray], [r["relevance_sum"] for r in local], rtol=1e-6, atol=1e-9
    )
    np.testing.assert_allclose([r["score"] for r in on_ray], [r["score"] for r in local], rtol=1e-6)
    ours, theirs = relevance_files(tmp_path / "ray"), relevance_files(tmp_path / "local")
    assert ours.keys() == theirs.keys() and len(ours) == ARRAY_SAMPLES + IMAGE_SAMPLES
    for name, relevance in theirs.items():
        np.testing.assert_allclose(ours[name], relevance, rtol=1e-6, atol=1e-7 * np.abs(relevance).max(), err_msg=name)
    predicted = np.array([r["predicted"] for r in on_ray])
    assert (predicted == DIGITS["y"][: len(predicted)]).mean() > 0.9  # the digits the model was tested on


def test_the_cli_runs_on_a_cluster_address(ray_cluster, explained, digit_inputs, tmp_path):
    out = tmp_path / "heatmaps"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "HOME": str(tmp_path)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lrpc.cli",
            "explain",
            str(explained),
            str(digit_inputs[1]),
            "-o",
            str(out),
            "--ray",
            "--address",
            ray_cluster,
            "--actors",
            "2",
            "--batch-size",
            "4",
            "--low-memory",  # each actor's session without weight prepacking: the same files
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert f"explained {IMAGE_SAMPLES} samples" in done.stdout and "Ray Data, 2 actors on cpu" in done.stdout
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    local = explain_files(explained, [digit_inputs[1]], tmp_path / "local", progress=False)
    assert [r["input"] for r in rows] == [r["input"] for r in local]
    assert [int(r["predicted"]) for r in rows] == [r["predicted"] for r in local]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (tmp_path / "local").iterdir())


def test_a_failed_job_writes_nothing(ray_cluster, explained, digit_inputs, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ("a", "b", "c"):
        (folder / f"{name}.png").write_bytes((digit_inputs[1] / f"digit{ARRAY_SAMPLES}.png").read_bytes())
    (folder / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"broken\.png: cannot read the image"):
        explain_files_ray(explained, [folder], tmp_path / "out", actors=2, batch_size=1, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mixed"]  # no OUT, no staging folder left


@pytest.mark.slow  # 15–18 s: a Ray cluster of its own
def test_an_old_outdir_is_kept_by_a_failed_job_and_replaced_whole(ray_cluster, explained, digit_inputs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.png").write_text("old")
    image = digit_inputs[1] / f"digit{ARRAY_SAMPLES}.png"
    with pytest.raises(ValueError, match="exists and is not empty; add --overwrite"):
        explain_files_ray(explained, [image], out, actors=1, progress=False)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"broken\.png: cannot read the image"):
        explain_files_ray(
            explained, [image, tmp_path / "broken.png"], out, actors=2, batch_size=1, progress=False, overwrite=True
        )
    assert sorted(p.name for p in out.iterdir()) == ["old.png"]
    explain_files_ray(explained, [image], out, actors=1, progress=False, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == [image.name, "predictions.csv"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.png", "out"]


@pytest.mark.parametrize(
    "samples, batch, actors, blocks", [(300, 32, 2, 10), (40, 32, 2, 2), (1, 32, 4, 1), (5, 1, 2, 5), (3, 32, 8, 3)]
)
def test_every_actor_gets_a_block(samples, batch, actors, blocks):
    assert block_count(samples, batch, actors) == blocks


def test_rows_come_back_in_input_order():
    refs = [SampleRef(f"s{i}", "given/batch.npy", i) for i in range(6)]
    finished = [(i, json.dumps({"input": f"s{i}", "source": "/abs/given/batch.npy"})) for i in (3, 0, 5, 1, 4, 2)]
    rows = ordered_rows(finished, refs)
    assert [r["input"] for r in rows] == [f"s{i}" for i in range(6)]
    assert {r["source"] for r in rows} == {"given/batch.npy"}  # as the caller named it, not the actors' path


def test_without_ray_the_cli_says_how_to_install_it(explained, digit_inputs, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    monkeypatch.setitem(sys.modules, "ray.data", None)
    code = main(["explain", str(explained), str(digit_inputs[1]), "-o", str(tmp_path / "out"), "--ray"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("lrpc: error: ") and 'pip install "lrpc[ray]"' in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()
    with pytest.raises(RayNotInstalledError, match=r'pip install "lrpc\[ray\]"'):
        explain_files_ray(explained, digit_inputs, tmp_path / "out")


def test_ray_options_need_ray(explained, digit_inputs, tmp_path, capsys):
    assert main(["explain", str(explained), str(digit_inputs[1]), "-o", str(tmp_path / "out"), "--actors", "3"]) == 2
    assert "only with --ray" in capsys.readouterr().err


@pytest.mark.slow  # 15–18 s: a Ray cluster of its own
def test_the_cli_starts_a_local_cluster_without_an_address(ray_cluster, explained, digit_inputs, tmp_path, request):
    """The default: no --address, so `lrpc explain --ray` starts its own Ray for the run and stops it."""
    out = tmp_path / "heatmaps"
    # Short, outside pytest's folders (pytest-xdist adds popen-gwN/): Ray's socket paths under it must stay
    # under 108 bytes.
    ray_tmp = pathlib.Path(tempfile.mkdtemp(prefix="lrpc-ray-"))
    request.addfinalizer(lambda: shutil.rmtree(ray_tmp, ignore_errors=True))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "HOME": str(tmp_path), "RAY_TMPDIR": str(ray_tmp)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lrpc.cli",
            "explain",
            str(explained),
            str(digit_inputs[0]),
            "-o",
            str(out),
            "--ray",
            "--format",
            "json",
            "-q",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert f"explained {ARRAY_SAMPLES} samples" in done.stdout
    saved = json.loads((out / "predictions.json").read_text())
    reference = explain_files(explained, [digit_inputs[0]], tmp_path / "local", table="json", progress=False)
    assert [r["predicted"] for r in saved] == [r["predicted"] for r in reference]
    assert (ray_tmp / "ray").is_dir() and not (tmp_path / ".ray").exists()
