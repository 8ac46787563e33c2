"""README and the findings page order two optimizers only as the seeds allow.

A sentence of their hand-written prose that names a workload and two optimizers and orders them must
say "better than", "worse than" or "level with" (other ordering words are refused), and the word must
be the one the committed orderings table gives (``analysis/orderings.py``: "better" or "worse" only
where the 95% interval of the difference excludes zero).
"""

from __future__ import annotations

import csv
import re

from tests.support.committed_results import REPO

PAGES = ("README.md", "docs/findings.md")
ORDERINGS = REPO / "results" / "long" / "figures" / "orderings.csv"
VERDICT_WORDS = {"better than": "better", "worse than": "worse", "level with": "level"}
OTHER_ORDER_WORDS = ("ahead of", "behind", "beats", "outperform", "higher than", "lower than", "above", "below",
                     "trails", "edges out")
WORKLOADS = {"fmnist-cnn": "fmnist-cnn", "CNN": "fmnist-cnn", "fmnist-resnet": "fmnist-resnet",
             "ResNet": "fmnist-resnet", "mnist1d-mlp": "mnist1d-mlp", "MNIST-1D": "mnist1d-mlp"}
#: Names in prose -> optimizer (longest first, so that "mL-BFGS (ours)" is not read as two names).
OPTIMIZERS = {"the authors' code": "mlbfgs_authors", "mlbfgs_authors": "mlbfgs_authors",
              "sgd_normalized": "sgd_normalized", "normalised SGD": "sgd_normalized", "mL-BFGS": "mlbfgs",
              "mlbfgs": "mlbfgs", "slbfgs": "slbfgs", "K-FAC": "kfac", "kfac": "kfac", "Adam": "adam",
              "adam": "adam", "SGD": "sgd", "sgd": "sgd", "schedule-free AdamW": "adamw_schedulefree",
              "adamw_schedulefree": "adamw_schedulefree", "Muon": "muon", "muon": "muon", "SOAP": "soap",
              "soap": "soap", "Shampoo": "shampoo", "shampoo": "shampoo"}


def _prose(text: str) -> str:
    """The text without generated blocks (``<!-- ...:start -->`` to ``<!-- ...:end -->``) and code."""
    text = re.sub(r"<!-- (\w+):start.*?<!-- \1:end[^>]*-->", "", text, flags=re.S)
    return re.sub(r"```.*?```", "", text, flags=re.S)


def _names(sentence: str) -> list[str]:
    found, rest = [], sentence
    for name in sorted(OPTIMIZERS, key=len, reverse=True):
        pattern = rf"(?<![\w-]){re.escape(name)}(?![\w-])"
        if re.search(pattern, rest):
            found.append(OPTIMIZERS[name])
            rest = re.sub(pattern, " ", rest)
    return list(dict.fromkeys(found))


def _first_name(text: str) -> str | None:
    """The optimizer named first in ``text`` (by position; the longest name where two start together)."""
    hits = [(m.start(), -len(name), OPTIMIZERS[name]) for name in OPTIMIZERS
            for m in re.finditer(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text)]
    return min(hits)[2] if hits else None


def claims(text: str) -> list[tuple[str, str, str, str]]:
    """(sentence, workload, other optimizer, word) for every ordering sentence of ``text``; a word not
    in :data:`VERDICT_WORDS` is returned as is, to be refused."""
    out = []
    for sentence in re.split(r"(?<=[.;:!?])\s+|\n\s*[-*] ", _prose(text)):
        flat = " ".join(sentence.split())
        workloads = {w for key, w in WORKLOADS.items() if re.search(rf"(?<![\w-]){re.escape(key)}(?![\w-])", flat)}
        names = _names(flat)
        if len(workloads) != 1 or "mlbfgs" not in names or len(names) < 2:
            continue
        workload = next(iter(workloads))
        for word in VERDICT_WORDS:  # each verdict word binds the optimizer named right after it
            for match in re.finditer(rf"\b{word}\s+(.{{0,40}})", flat):
                first = _first_name(match.group(1))
                if first is not None and first != "mlbfgs":
                    out.append((flat, workload, first, word))
        for word in OTHER_ORDER_WORDS:
            if re.search(rf"\b{word}\b", flat):
                out += [(flat, workload, other, word) for other in names if other != "mlbfgs"][:1]
    return out


def _table() -> dict[tuple[str, str], str]:
    with open(ORDERINGS, newline="") as f:
        return {(r["workload"], r["other"]): r["verdict"] for r in csv.DictReader(f) if r["label"] == "mlbfgs"}


def wrong(text: str, table: dict[tuple[str, str], str]) -> list[str]:
    bad = []
    for sentence, workload, other, word in claims(text):
        if word not in VERDICT_WORDS:
            bad.append(f"{word!r} orders mL-BFGS and {other} on {workload}; say better than / worse than / "
                       f"level with: {sentence}")
        elif (workload, other) in table and table[(workload, other)] != VERDICT_WORDS[word]:
            bad.append(f"{word!r}: the orderings table says {table[(workload, other)]!r} for mL-BFGS against "
                       f"{other} on {workload}: {sentence}")
    return bad


def test_pages_order_optimizers_only_as_the_orderings_table_does() -> None:
    table = _table()
    assert table  # the committed table has the comparison
    for page in PAGES:
        path = REPO / page
        if path.is_file():
            assert wrong(path.read_text(), table) == [], page


def test_a_stated_ordering_within_noise_is_caught() -> None:
    table = {("fmnist-cnn", "sgd"): "level", ("fmnist-resnet", "sgd"): "worse"}
    assert wrong("On the CNN, mL-BFGS is level with sgd.", table) == []
    assert len(wrong("On the CNN, mL-BFGS is worse than sgd.", table)) == 1
    assert len(wrong("On the CNN, mL-BFGS ends below sgd.", table)) == 1  # not a verdict word
    assert wrong("On the ResNet, mL-BFGS is worse than sgd (0.88 against 0.92).", table) == []
    assert wrong("mL-BFGS needs 1.25 × sgd's iterations on the CNN.", table) == []  # no ordering word
    assert wrong("<!-- x:start -->On the CNN, mL-BFGS is worse than sgd.<!-- x:end -->", table) == []
    table[("fmnist-cnn", "adam")] = "worse"
    assert wrong("On the CNN mL-BFGS is level with sgd and worse than adam.", table) == []  # each its own
    assert len(wrong("On the CNN mL-BFGS is worse than sgd and level with adam.", table)) == 2
