"""lrpc_runtime.staging: an output folder appears complete or not at all, replaces an old one only when asked,
never over or inside the inputs, and staging left by a killed process is removed by the next run."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from lrpc_runtime import staging
from lrpc_runtime.staging import check_out_dir, guard_inputs, remove_stale, staged_folder, stale_pid


def listing(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(folder.iterdir())}


def write(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (folder / name).write_text(text)


@pytest.mark.parametrize("existing", ["missing", "empty"])
def test_a_new_or_empty_folder_is_published_by_one_rename(tmp_path, existing):
    out = tmp_path / "out"
    if existing == "empty":
        out.mkdir()
    with staged_folder(out) as folder:
        write(folder, {"a.png": "1", "predictions.csv": "2"})
        assert not out.exists() or not any(out.iterdir())  # nothing visible before the end
    assert listing(out) == {"a.png": "1", "predictions.csv": "2"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert oct(out.stat().st_mode & 0o777) != oct(0o700)  # not mkdtemp's private mode


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "rename-aside"])
def test_overwrite_replaces_the_whole_folder(tmp_path, monkeypatch, exchange):
    out = tmp_path / "out"
    out.mkdir()
    write(out, {"a.png": "old", "stale.png": "old", "notes.txt": "mine"})
    (out / "b.png").mkdir()  # a folder where a new file goes: it blocked a move before
    (out / "b.png" / "x").write_text("old")
    if not exchange:
        monkeypatch.setattr(staging, "_exchange", lambda a, b: False)
    with staged_folder(out, overwrite=True) as folder:
        write(folder, {"a.png": "new", "b.png": "new"})
    assert listing(out) == {"a.png": "new", "b.png": "new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_non_empty_folder_is_refused_without_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(ValueError, match="exists and is not empty; add --overwrite"):
        check_out_dir(out, overwrite=False)
    check_out_dir(out, overwrite=True)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="exists and is not a folder"):
        check_out_dir(tmp_path / "file", overwrite=True)


def test_files_that_appear_during_the_run_are_not_replaced(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="files appeared in the output folder during the run"):
        with staged_folder(out) as folder:
            write(folder, {"a.png": "new"})
            out.mkdir()
            (out / "theirs.txt").write_text("keep")
    assert listing(out) == {"theirs.txt": "keep"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_failure_removes_the_staging_and_the_parents_it_created(tmp_path):
    out = tmp_path / "new" / "deeper" / "out"
    with pytest.raises(RuntimeError):
        with staged_folder(out) as folder:
            write(folder, {"a.png": "1"})
            raise RuntimeError("a bad image")
    assert list(tmp_path.iterdir()) == []


def test_a_signal_during_publishing_waits_until_the_folder_is_in_place(tmp_path, monkeypatch):
    """Ctrl-C as the result is renamed in: the old folder or the new one, never a mix."""
    out = tmp_path / "out"
    out.mkdir()
    write(out, {"old.png": "old"})
    real_exchange = staging._exchange

    def interrupted_exchange(a, b):
        os.kill(os.getpid(), signal.SIGINT)  # held back until the renames are done
        return real_exchange(a, b)

    monkeypatch.setattr(staging, "_exchange", interrupted_exchange)
    with pytest.raises(KeyboardInterrupt):
        with staged_folder(out, overwrite=True) as folder:
            write(folder, {"a.png": "new", "predictions.csv": "table"})
    assert listing(out) == {"a.png": "new", "predictions.csv": "table"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_signal_while_the_old_folder_is_removed_leaves_no_staging(tmp_path, monkeypatch):
    """Ctrl-C while the replaced folder (now at the staging path) is being deleted: deleting finishes first."""
    out = tmp_path / "out"
    out.mkdir()
    write(out, {f"old{i}.png": "old" for i in range(5)})
    real_rmtree = staging.shutil.rmtree

    def interrupted_rmtree(path, *args, **kwargs):
        next(Path(path).iterdir()).unlink()
        os.kill(os.getpid(), signal.SIGINT)
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(staging.shutil, "rmtree", interrupted_rmtree)
    with pytest.raises(KeyboardInterrupt):
        with staged_folder(out, overwrite=True) as folder:
            write(folder, {"a.png": "new"})
    assert listing(out) == {"a.png": "new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_signal_as_the_staging_folder_is_made_leaves_nothing(tmp_path, monkeypatch):
    """Ctrl-C the instant mkdtemp returns: the new staging folder and the parents made for it go."""
    real_mkdtemp = staging.tempfile.mkdtemp

    def interrupted_mkdtemp(*args, **kwargs):
        made = real_mkdtemp(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)
        return made

    monkeypatch.setattr(staging.tempfile, "mkdtemp", interrupted_mkdtemp)
    with pytest.raises(KeyboardInterrupt):
        with staged_folder(tmp_path / "new" / "out"):
            pass
    assert list(tmp_path.iterdir()) == []


def test_stale_names_record_host_and_pid():
    host = socket.gethostname()
    assert stale_pid(f".out.{host}-17.abcd_123.partial", "out", ".partial", host) == 17
    assert stale_pid(f".out.a-b.{host}-17.abcd_123.partial", "out.a-b", ".partial", host) == 17
    assert stale_pid(".out.abcd_123.partial", "out", ".partial", host) is None  # no owner: not ours to judge
    assert stale_pid(f".other.{host}-17.abcd_123.partial", "out", ".partial", host) is None
    assert stale_pid(f".out.{host}-17.abcd_123.partial", "out", ".partial", "elsewhere") is None


def test_only_staging_of_dead_processes_of_this_host_is_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        host = socket.gethostname()
        names = {
            "dead": f".out.{host}-{dead.pid}.aaaaaaaa.partial",
            "alive": f".out.{host}-{alive.pid}.bbbbbbbb.partial",
            "remote": f".out.elsewhere-{dead.pid}.cccccccc.partial",
            "other": f".img.{host}-{dead.pid}.dddddddd.partial",
            "old-style": ".out.eeeeeeee.partial",
        }
        for name in names.values():
            (tmp_path / name).mkdir()
            (tmp_path / name / "a.png").write_text("x")
        (tmp_path / f".out.{host}-{dead.pid}.ffffffff.tmp").write_text("x")
        assert remove_stale(tmp_path, "out", ".partial") == [tmp_path / names["dead"]]
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            [n for k, n in names.items() if k != "dead"] + [f".out.{host}-{dead.pid}.ffffffff.tmp"]
        )
    finally:
        alive.kill()
        alive.wait()


@pytest.mark.parametrize(
    "out, relation",
    [("photos", "is"), (".", "contains"), ("photos/heatmaps", "is inside"), ("link", "is"), ("one.png/x", "is inside")],
)
def test_an_output_folder_among_the_inputs_is_refused(tmp_path, monkeypatch, out, relation):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    (tmp_path / "one.png").write_text("")
    (tmp_path / "link").symlink_to(tmp_path / "photos")
    with pytest.raises(ValueError, match=f"-o {out} {relation} the input "):
        guard_inputs(Path(out), ["photos", "one.png"])
    guard_inputs(Path("heatmaps"), ["photos", "one.png"])  # beside the inputs: fine
