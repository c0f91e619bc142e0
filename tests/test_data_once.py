"""comad.data.once: the one builder and completeness marker of every generated folder."""
from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest

from comad.data.once import MARKER, build_once, read_marker


def _write(n: int):
    def make(tmp: Path) -> dict:
        for i in range(n):
            (tmp / f"f{i}.txt").write_text(str(i))
        return dict(files=n)

    return make


def test_made_once_reused_and_marker_last(tmp_path: Path) -> None:
    root = tmp_path / "set"
    assert build_once(root, "k", dict(n=2), _write(2)) == root
    assert sorted(p.name for p in root.iterdir()) == [MARKER, "f0.txt", "f1.txt"]
    assert read_marker(root) == dict(kind="k", params=dict(n=2), info=dict(files=2))
    stamp = (root / "f0.txt").stat().st_mtime_ns

    def never(tmp: Path) -> None:
        raise AssertionError("a complete set must be reused, not rebuilt")

    assert build_once(root, "k", dict(n=2), never) == root
    assert (root / "f0.txt").stat().st_mtime_ns == stamp


def test_other_params_replace_or_raise(tmp_path: Path) -> None:
    root = tmp_path / "set"
    build_once(root, "k", dict(n=3), _write(3))
    with pytest.raises(ValueError, match=r"k folder .*set was made with \{'n': 3\}, asked for \{'n': 1\}"):
        build_once(root, "k", dict(n=1), _write(1), on_mismatch="raise")
    assert (root / "f2.txt").is_file()  # refused: untouched
    build_once(root, "k", dict(n=1), _write(1))  # replace: the old files are gone
    assert sorted(p.name for p in root.iterdir()) == [MARKER, "f0.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".set.") and p.is_dir()]  # no temp folders left


def test_interrupted_build_leaves_the_old_set(tmp_path: Path) -> None:
    root = tmp_path / "set"
    build_once(root, "k", dict(n=2), _write(2))

    def crash(tmp: Path) -> None:
        (tmp / "half.txt").write_text("x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_once(root, "k", dict(n=5), crash)
    assert read_marker(root)["params"] == dict(n=2) and not (root / "half.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".set.") and p.is_dir()]


def test_foreign_folder_refused_and_untouched_legacy_rebuilt(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "sub" / "keep.jpg").write_bytes(b"x")
    with pytest.raises(FileExistsError, match=r"k folder .*mine holds files that this tool did not write \(e\.g\. sub/keep\.jpg\)"):
        build_once(mine, "k", {}, _write(1))
    assert (mine / "sub" / "keep.jpg").read_bytes() == b"x"
    legacy = tmp_path / "legacy"  # a folder an earlier version of our builders made
    legacy.mkdir()
    (legacy / "DEMO_DATA.json").write_text("{}")
    (legacy / "old.txt").write_text("old")
    build_once(legacy, "k", {}, _write(1))
    assert sorted(p.name for p in legacy.iterdir()) == [MARKER, "f0.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert build_once(empty, "k", {}, _write(1)) == empty


def _concurrent_maker(root: str, log: str) -> None:
    def make(tmp: Path) -> None:
        with open(log, "a") as f:
            f.write("built\n")
        for i in range(50):
            (tmp / f"f{i}.txt").write_text(str(i))

    build_once(Path(root), "k", dict(n=50), make)
    assert len(list(Path(root).glob("f*.txt"))) == 50  # every maker sees the complete set


def test_concurrent_makers_build_once(tmp_path: Path) -> None:
    root, log = tmp_path / "set", tmp_path / "log.txt"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_concurrent_maker, args=(str(root), str(log))) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert log.read_text() == "built\n"  # one built, the others waited and reused it
