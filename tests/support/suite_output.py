"""Read what ``python -m experiments.suite`` prints (for the driver's tests)."""

from __future__ import annotations

import re


def listed_run_ids(text: str) -> list[str]:
    """The run ids of a (dry) run's output, in order (skipped, copied or to run)."""
    ids = []
    for line in text.splitlines():
        m = re.match(r"\[suite(?: \d+/\d+)?\](?: lockstep)? (.+?): (finished|would run)", line)
        if m:
            ids += m.group(1).split(", ")
    return ids
