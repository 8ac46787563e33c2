"""The documentation site builds strictly (notebooks executed) and renders in a real browser.

``mkdocs build --strict`` turns every warning (a broken link, a page that fails to render, a notebook
cell that raises) into an error. Then headless Chromium (Debian's package) loads the home page and the
MLBFGS API page from the built files: they must show the navigation and, on the API page, the
constructor's signature. Skipped outside CI when mkdocs or Chromium is missing; in CI
(``CI=true``, where ``run_all.sh --tests`` installs both) a missing tool fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.committed_results import REPO

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


def _require(ok: bool, what: str) -> None:
    if not ok:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{what} is missing; run_all.sh --tests installs it")
        pytest.skip(f"{what} is not installed")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _require(shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is not None, "mkdocs")
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-4000:]
    return out


def _dom(page: Path) -> str:
    _require(CHROMIUM is not None, "chromium")
    done = subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                           page.as_uri()], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_home_page_renders_with_navigation(site: Path) -> None:
    dom = _dom(site / "index.html")
    assert "md-nav" in dom and "API reference" in dom and "Findings" in dom
    assert "The paper's claims, as tested here" in dom
    assert 'href="findings/"' in dom  # README's docs/ links rewritten for the site


def test_api_page_shows_the_signature(site: Path) -> None:
    dom = _dom(site / "api" / "index.html")
    assert 'id="mlbfgs.MLBFGS"' in dom and "md-nav" in dom
    for part in ("params", "history_size", "update_period", "direction_norm"):
        assert part in dom


def test_notebooks_are_pages_with_their_figures(site: Path) -> None:
    verdict = (site / "notebooks" / "verdict" / "index.html").read_text()
    assert verdict.count("<img") >= 3  # profiles, target sensitivity, lr sensitivity, executed at build
    assert "Time to target: fmnist-cnn" in verdict


def test_cli_reference_is_the_parsers_help(site: Path) -> None:
    text = (site / "cli" / "index.html").read_text()
    assert "--progress-every" in text and "--workload" in text and "--target-fraction" in text


def test_protocol_page_reads_the_search_spaces_from_the_preset(site: Path) -> None:
    text = (site / "protocol" / "index.html").read_text()
    assert "<code>sgd_normalized</code>" in text and "log-uniform [0.003, 3]" in text  # from long.json
    assert "tie-break seeds" in text
