#!/usr/bin/env python3
"""Which of flowherd's packages imports which (read from the source with ``ast``; nothing runs).

    python scripts/imports.py            # the matrix, and any import that runs against the floors
    python scripts/imports.py --check    # exit 1 when one does (the floors below are the rule)

Floors, lowest first: a package may import only packages on lower floors.
"""

from __future__ import annotations

import ast
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["models", "deploy", "store", "console", "workers", "reporter", "producer"]
#: floor of each package: imports must go to a strictly lower floor (same floor: never)
FLOORS = {
    "models": 0,
    "deploy": 1,
    "store": 2,
    "console": 3,
    "workers": 4,
    "reporter": 4,
    "producer": 5,
}


def edges() -> Counter[tuple[str, str]]:
    found: Counter[tuple[str, str]] = Counter()
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = []
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                for n in names:
                    top = n.split(".")[0]
                    if top in FLOORS and top != pkg:
                        found[pkg, top] += 1
    return found


def main() -> int:
    found = edges()
    present = [p for p in PACKAGES if (ROOT / p).is_dir()]
    width = max(map(len, present)) + 2
    print("imports (row imports column; the number of import statements)")
    print(" " * width + "".join(f"{p:>{width}}" for p in present))
    for a in present:
        print(
            f"{a:<{width}}" + "".join(f"{found.get((a, b), '') or '.':>{width}}" for b in present)
        )
    wrong = [(a, b) for (a, b) in found if FLOORS[b] >= FLOORS[a]]
    for a, b in wrong:
        print(f"against the floors: {a} imports {b} ({found[a, b]}x)")
    return 1 if wrong and "--check" in sys.argv else 0


if __name__ == "__main__":
    sys.exit(main())
