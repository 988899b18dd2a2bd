"""The recipes of docs/integration.md, run as written: a block marked ``<!-- recipe: NAME -->`` is
executed in a namespace holding the names of the host module it belongs in (``db``, ``User``...)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

INTEGRATION_GUIDE = Path(__file__).resolve().parents[2] / "docs" / "integration.md"
_RECIPE = re.compile(r"<!-- recipe: (?P<name>[\w-]+) -->\n```python\n(?P<body>.*?)\n```", re.DOTALL)


def recipe(name: str) -> str:
    """The code of the recipe ``name``, as the guide shows it."""
    text = INTEGRATION_GUIDE.read_text(encoding="utf-8")
    found = {match["name"]: match["body"] for match in _RECIPE.finditer(text)}
    assert name in found, f"docs/integration.md has no recipe {name!r}"
    return found[name] + "\n"


def run_recipe(name: str, **host_names: Any) -> dict[str, Any]:
    """Execute the recipe ``name`` with ``host_names`` defined; what it defined, by name."""
    namespace: dict[str, Any] = {"__name__": f"recipe_{name.replace('-', '_')}", **host_names}
    exec(compile(recipe(name), str(INTEGRATION_GUIDE), "exec"), namespace)
    return namespace
