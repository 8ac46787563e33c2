"""Atomic writes: files get the mode a plain open() gives (0o666 less the umask), no temporary file stays."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from experiments.runner.atomic import read_json, save_torch, write_json
from experiments.runner.manifest import Manifest


@pytest.fixture(params=[0o022, 0o027, 0o002])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_json_gives_the_mode_of_a_plain_open(tmp_path: Path, umask: int) -> None:
    target = tmp_path / "sub" / "run.json"
    write_json(target, {"a": 1})
    plain = tmp_path / "plain.json"
    plain.write_text("{}")
    assert _mode(target) == 0o666 & ~umask == _mode(plain)
    assert read_json(target) == {"a": 1}


def test_save_torch_gives_the_mode_of_a_plain_open(tmp_path: Path, umask: int) -> None:
    target = tmp_path / "it000000001.r0.pt"
    save_torch(target, {"x": torch.arange(3)})
    assert _mode(target) == 0o666 & ~umask
    assert torch.equal(torch.load(target)["x"], torch.arange(3))


def test_manifest_is_readable_by_others_under_the_usual_umask(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        manifest = Manifest(tmp_path / "run.json", {"run_id": "r"}, None)
        manifest.save()
    finally:
        os.umask(previous)
    assert _mode(tmp_path / "run.json") == 0o644


def test_replacing_keeps_the_new_mode_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "run.json"
    target.write_text("{}")
    target.chmod(0o600)
    write_json(target, {"b": 2})
    assert _mode(target) == 0o666 & ~_current_umask()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary_one(tmp_path: Path) -> None:
    target = tmp_path / "run.json"
    write_json(target, {"old": True})

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot save")

    with pytest.raises(RuntimeError, match="cannot save"):
        save_torch(target, Unpicklable())
    assert read_json(target) == {"old": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
