"""README's usage example runs as printed and trains: the loss it ends with is far below chance."""

from __future__ import annotations

import math
import re

import torch

from tests.support.committed_results import REPO


def test_readme_example_trains() -> None:
    code = re.search(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert code is not None
    scope: dict[str, object] = {}
    exec(compile(code.group(1), "README.md", "exec"), scope)  # noqa: S102 - the project's own README
    model, x, y = scope["model"], scope["x"], scope["y"]
    with torch.no_grad():
        loss = float(torch.nn.functional.cross_entropy(model(x), y))  # type: ignore[operator]
    assert loss < 0.2 * math.log(2)  # chance is log 2
