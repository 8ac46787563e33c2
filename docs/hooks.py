"""Build hooks of the documentation site (mkdocs.yml).

- Pages that are the repository's own files (index.md is README.md, developing.md is DEVELOPERS.md)
  keep their repository-relative links; here they are rewritten for the site.
- ``<!-- cli: module -->`` in a page becomes that module's ``--help``, from its argparse parser, so a
  command-line flag is described once, in the code.
- ``<!-- tuning: preset -->`` becomes the preset's search spaces and lengths, read from its JSON file.
"""

from __future__ import annotations

import importlib
import json
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
TUNING = re.compile(r"<!-- tuning: ([\w-]+) -->")
PARSERS = {"experiments.suite.cli": "build_parser", "experiments.run": "build_parser",
           "analysis.__main__": "build_parser"}


def _help(module: str) -> str:
    if str(ROOT) not in sys.path:  # the suite's packages (experiments, analysis) are not installed
        sys.path.insert(0, str(ROOT))
    parser = getattr(importlib.import_module(module), PARSERS[module])()
    return "```text\n" + parser.format_help().rstrip() + "\n```"


def _dimension(name: str, spec: dict[str, Any]) -> str:
    kind, arg = next(iter(spec.items()))
    if kind == "choice":
        return f"{name} ∈ {{{', '.join(json.dumps(v) for v in arg)}}}"
    return f"{name} {kind.replace('_', '-')} [{arg[0]:g}, {arg[1]:g}]"


def _tuning(preset: str) -> str:
    raw = json.loads((ROOT / "experiments" / "suite" / "presets" / f"{preset}.json").read_text())
    tuning = raw["tuning"]
    rows = [f"| optimizer | search space ({tuning['trials']} quasi-random trials each, seed {tuning['seed']}) |",
            "|---|---|"]
    rows += [f"| `{name}` | {'; '.join(_dimension(k, v) for k, v in space.items())} |"
             for name, space in tuning["spaces"].items()]
    rows += ["", "| workload | final length | trial length (fraction) | seeds of the finals | tie-break seeds |",
             "|---|---|---:|---:|---|"]
    for entry in raw["runs"]:
        seeds = entry.get("seeds", raw.get("seeds", [0]))
        rows.append(f"| {entry['workload']} | {entry['epochs']} epochs | {entry.get('trial_fraction', 1):g} | "
                    f"{len(seeds)} | {', '.join(map(str, tuning.get('tiebreak_seeds', []))) or 'none'} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, **_: Any) -> str:
    for old, new in LINKS:
        markdown = markdown.replace(old, new)
    markdown = TUNING.sub(lambda m: _tuning(m.group(1)), markdown)
    return CLI.sub(lambda m: _help(m.group(1)), markdown)
