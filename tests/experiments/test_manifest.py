"""Run manifests (experiments/runner/manifest.py): the commit a run started from survives its resumes, and
results written under results/ do not make the code dirty."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from experiments.runner.manifest import Manifest, git_state


def test_a_resume_keeps_the_start_commit_and_records_its_own(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    first = Manifest(path, {"run_id": "r", "git_commit": "aaaa", "git_dirty": False}, None)
    first.update(iterations_done=200)
    first.save()
    resumed = Manifest(path, {"run_id": "r", "git_commit": "bbbb", "git_dirty": True}, 200)
    resumed.save()
    data = json.loads(path.read_text())
    assert (data["git_commit"], data["git_dirty"]) == ("aaaa", False)
    assert data["start_time"] == data["attempts"][0]["start_time"]
    assert [(a["git_commit"], a["git_dirty"], a["resumed_from_iteration"]) for a in data["attempts"]] == [
        ("aaaa", False, None), ("bbbb", True, 200)]


def test_a_fresh_start_over_an_old_manifest_records_the_new_commit(tmp_path: Path) -> None:
    """--force (or a run without a checkpoint) starts over: nothing of the old manifest is kept."""
    path = tmp_path / "run.json"
    Manifest(path, {"git_commit": "aaaa", "git_dirty": False}, None).save()
    Manifest(path, {"git_commit": "bbbb", "git_dirty": False}, None).save()
    data = json.loads(path.read_text())
    assert data["git_commit"] == "bbbb" and len(data["attempts"]) == 1


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=root, check=True,
                   capture_output=True)


def test_results_do_not_make_the_code_dirty(tmp_path: Path) -> None:
    (tmp_path / "results").mkdir()
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results" / "record.json").write_text("{}\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-qm", "start")
    state = git_state(tmp_path)
    assert state["git_dirty"] is False and len(state["git_commit"]) == 40
    (tmp_path / "results" / "record.json").write_text('{"runs": 1}\n')  # a suite updating its record
    (tmp_path / "untracked.py").write_text("")
    assert git_state(tmp_path)["git_dirty"] is False
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_state(tmp_path)["git_dirty"] is True


def test_outside_a_checkout_git_cannot_tell(tmp_path: Path) -> None:
    assert git_state(tmp_path) == {"git_commit": None, "git_dirty": None}
