"""The figures of each adversarial scenario, and the Markdown table made of them.

Each scenario writes one JSON file into ``ADVERSARIAL_REPORT_DIR`` when that variable is set (the
``figures`` fixture does it). Then::

    python -m tests.adversarial.report [DIRECTORY]

prints one table row per scenario, a test function with its parametrized variants added up (the
directory defaults to ``ADVERSARIAL_REPORT_DIR``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

REPORT_DIR_ENV = "ADVERSARIAL_REPORT_DIR"


@dataclass
class Figures:
    """What one scenario did and saw."""

    scenario: str
    """The test's node id, for example ``tests/adversarial/test_load.py::test_x``."""
    unit: str = "requests"
    """What ``count`` counts: requests, cases (Hypothesis examples) or boots."""
    count: int = 0
    lost: int = 0
    """Requests (or boots) whose outcome is missing or wrong: see each scenario's docstring."""
    server_errors: int = 0
    """Answers with a 5xx status."""
    seconds: float = 0.0
    outcome: str = "not run"
    """passed, failed or skipped: a failing scenario is reported too."""

    @property
    def title(self) -> str:
        """``test_bad_input.py::test_two_servers[sync]`` -> ``bad input: two servers [sync]``."""
        module, _, name = self.scenario.rpartition("::")
        module = Path(module).stem.removeprefix("test_").replace("_", " ")
        name = name.removeprefix("test_")
        words = re.sub(r"\[(.*)\]$", r" [\1]", name).replace("_", " ")
        return f"{module}: {words}"


def record(figures: Figures, directory: Path | None = None) -> Path | None:
    """Write ``figures`` as JSON into ``directory`` (ADVERSARIAL_REPORT_DIR by default); nothing
    when neither is set. Returns the file written."""
    if directory is None:
        env = os.environ.get(REPORT_DIR_ENV)
        if not env:
            return None
        directory = Path(env)
    directory.mkdir(parents=True, exist_ok=True)
    # Readable, and unique: parameters that differ only in punctuation would otherwise collide.
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", figures.scenario).strip("_")[:150]
    digest = hashlib.sha256(figures.scenario.encode()).hexdigest()[:10]
    name = f"{readable}-{digest}.json"
    path = directory / name
    path.write_text(json.dumps(asdict(figures), indent=2) + "\n")
    return path


def load(directory: Path) -> list[Figures]:
    """Every scenario's figures in ``directory``, in the order of their node ids."""
    rows = [Figures(**json.loads(path.read_text())) for path in directory.glob("*.json")]
    return sorted(rows, key=lambda figures: figures.scenario)


@dataclass
class Row:
    """One scenario of the table: a test function with all of its parametrized variants."""

    test: str
    """The node id without the parameters, which runs every variant."""
    variants: list[Figures]

    @property
    def title(self) -> str:
        title = Figures(self.test).title
        return f"{title} ({len(self.variants)} variants)" if len(self.variants) > 1 else title

    @property
    def outcome(self) -> str:
        outcomes = [figures.outcome for figures in self.variants]
        if len(set(outcomes)) == 1:
            return outcomes[0]
        not_passed = sum(outcome != "passed" for outcome in outcomes)
        return f"{not_passed} of {len(outcomes)} not passed"

    @property
    def units(self) -> str:
        return "/".join(sorted({figures.unit for figures in self.variants}))

    def total(self, figure: str) -> float:
        return float(sum(getattr(figures, figure) for figures in self.variants))


def rows(figures: list[Figures]) -> list[Row]:
    """The figures grouped by test function, in the order of their node ids."""
    grouped: dict[str, list[Figures]] = {}
    for sheet in figures:
        grouped.setdefault(sheet.scenario.split("[", 1)[0], []).append(sheet)
    return [Row(test, variants) for test, variants in sorted(grouped.items())]


def markdown_table(figures: list[Figures]) -> str:
    lines = [
        "| Scenario | Requests / cases | Lost | 5xx | Seconds | Result | Reproduce |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for row in rows(figures):
        lines.append(
            f"| {row.title} | {_counted(int(row.total('count')), row.units)} "
            f"| {int(row.total('lost'))} "
            f"| {int(row.total('server_errors'))} | {row.total('seconds'):.1f} | {row.outcome} "
            f"| `.venv/bin/pytest '{row.test}' -q` |"
        )
    return "\n".join(lines)


def _counted(count: int, unit: str) -> str:
    """``2,000 requests``, ``1 boot``."""
    return f"{count:,} {unit.removesuffix('s') if count == 1 else unit}"


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        print("usage: python -m tests.adversarial.report [DIRECTORY]", file=sys.stderr)
        return 2
    where = argv[0] if argv else os.environ.get(REPORT_DIR_ENV)
    if not where:
        print(f"give a directory or set {REPORT_DIR_ENV}", file=sys.stderr)
        return 2
    rows = load(Path(where))
    if not rows:
        print(f"no figures in {where}", file=sys.stderr)
        return 1
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
