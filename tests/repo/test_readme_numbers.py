"""README's and the findings page's hand-written prose quote results only from committed tables.

Every number with three or more decimals outside generated blocks (accuracies, mu quantiles, ratios)
must appear, as a whole number token, in a table committed under ``results/``
(``.md`` / ``.csv``, run logs excluded: they hold too many numbers to prove anything). A number typed
by hand, or one left behind when the tables were regenerated, fails here.
"""

from __future__ import annotations

import re

from tests.support.committed_results import REPO, committed_results

PRECISE = re.compile(r"(?<![\w.])-?\d+\.\d{3,}(?!\d)")


PAGES = ("README.md", "docs/findings.md")


def _prose(text: str) -> str:
    """``text`` without its generated blocks (``<!-- name:start`` to ``<!-- name:end``)."""
    return re.sub(r"<!-- (\w+):start.*?<!-- \1:end", "", text, flags=re.S)


def _committed_tables() -> str:
    paths = [p for p in committed_results() if p.endswith((".md", ".csv")) and "/runs/" not in p]
    return "\n".join((REPO / p).read_text() for p in paths if (REPO / p).is_file())


def _missing(prose: str, tables: str) -> list[str]:
    numbers = sorted(set(PRECISE.findall(prose)))
    return [n for n in numbers if not re.search(rf"(?<![\d.]){re.escape(n)}(?!\d)", tables)]


def test_readme_precise_numbers_are_in_committed_tables() -> None:
    prose = "\n".join(_prose((REPO / page).read_text()) for page in PAGES)
    assert len(PRECISE.findall(prose)) >= 10  # the findings quote accuracies and mu quantiles
    assert _missing(prose, _committed_tables()) == []


def test_a_typed_or_stale_number_is_caught() -> None:
    tables = "| sgd | 0.9265 ± 0.0006 |\n0.251,1.000\n"
    assert _missing("sgd ends at 0.9265 and 0.251 of the state", tables) == []
    assert _missing("sgd ends at 0.9266", tables) == ["0.9266"]
    assert _missing("a share of 0.25", tables) == []  # two decimals: settings, not results
    assert _missing("ratio 1.0006", "11.00061") == ["1.0006"]  # whole tokens only
