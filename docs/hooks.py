"""Build hooks of the documentation site (mkdocs.yml).

- Pages that are the repository's own files (index.md is README.md, developing.md is DEVELOPERS.md)
  keep their repository-relative links; here they are rewritten for the site.
- ``<!-- cli: module -->`` in a page becomes that module's ``--help``, from its argparse parser, so a
  command-line flag is described once, in the code.
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

LINKS = (
    ("](docs/", "]("),  # README's links to the guides
    ("](DEVELOPERS.md)", "](developing.md)"),
    ("](../results/", "](results/"),  # a guide's links to committed results (docs/results is results/)
    ("([LICENSE](LICENSE))", "(the repository's `LICENSE`)"),
)
CLI = re.compile(r"<!-- cli: ([\w.]+) -->")
PARSERS = {"experiments.suite": "build_parser", "experiments.run": "build_parser", "analysis.__main__": "build_parser"}


def _help(module: str) -> str:
    if str(ROOT) not in sys.path:  # the suite's packages (experiments, analysis) are not installed
        sys.path.insert(0, str(ROOT))
    parser = getattr(importlib.import_module(module), PARSERS[module])()
    return "```text\n" + parser.format_help().rstrip() + "\n```"


def on_page_markdown(markdown: str, **_: Any) -> str:
    for old, new in LINKS:
        markdown = markdown.replace(old, new)
    return CLI.sub(lambda m: _help(m.group(1)), markdown)
