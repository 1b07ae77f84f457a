#!/usr/bin/env python3
"""Which part of flowherd imports which (read from the source with ``ast``; nothing runs).

    python scripts/imports.py            # the matrices, and any import that runs against the floors
    python scripts/imports.py --check    # exit 1 when one does (the floors below are the rule)

Two levels. Packages: ``flowherd.models``, ``flowherd.store``... each on a floor; a package may
import only packages on lower floors. Rooms: the folders by role inside the three commands'
packages (``reporter/table``, ``reporter/where``...), each on a floor of its own inside its
package, with the same rule. The package's own modules at its top (``reporter/job.py``,
``workers/jobs.py``) form the room ``.``. Relative imports are not used.
"""

from __future__ import annotations

import ast
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "flowherd"
#: floor of each package: imports must go to a strictly lower floor (same floor: never).
#: ``api`` is the package's own modules (flowherd/__init__.py and the Python API beside it).
FLOORS = {
    "models": 0,
    "deploy": 1,
    "store": 2,
    "console": 3,
    "workers": 4,
    "reporter": 4,
    "producer": 5,
    "lab": 6,
    "api": 7,
}
#: floors of the rooms inside a package (a room may import rooms on lower floors only)
ROOMS = {
    "workers": {"decode": 0, "fold": 1, ".": 2},
    "reporter": {
        "table": 0,
        "where": 1,
        "analysis": 2,
        "output": 3,
        "query": 4,
        "web": 5,
        "cli": 6,
        ".": 7,
    },
    "producer": {"traces": 0, "readers": 0, "run": 1, "live": 2, "cli": 3, ".": 4},
}


def modules() -> Iterator[tuple[str, Path]]:
    """Every module of the package as (dotted name, path), the role folders through their links."""
    for path in sorted(PACKAGE.glob("*.py")):
        yield "flowherd." + path.stem, path
    for link in sorted(p for p in PACKAGE.iterdir() if p.is_dir()):
        for path in sorted(link.rglob("*.py")):
            rel = path.relative_to(PACKAGE).with_suffix("")
            yield "flowherd." + ".".join(rel.parts), path


def where(dotted: str) -> tuple[str, str] | None:
    """(package, room) of a dotted module name of ours, or None for anything else."""
    parts = dotted.split(".")
    if parts[0] != "flowherd":
        return None
    if len(parts) == 1 or parts[1] not in FLOORS:
        return ("api", ".")
    pkg = parts[1]
    room = parts[2] if len(parts) > 3 and parts[2] in ROOMS.get(pkg, {}) else "."
    if len(parts) == 3 and parts[2] in ROOMS.get(pkg, {}):
        room = parts[2]  # the room's own package
    return pkg, room


def imports_of(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            for alias in node.names:  # from flowherd.reporter import cli: the module itself
                yield f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names)


def bare_imports() -> list[tuple[str, str]]:
    """Imports of a role folder by its bare name (``import models``): a second copy of it."""
    bare = {p.name for p in PACKAGE.iterdir() if p.is_dir()}
    found = []
    for name, path in modules():
        for mod in imports_of(path):
            if mod.split(".")[0] in bare:
                found.append((name, mod))
    return found


def edges() -> tuple[Counter[tuple[str, str]], Counter[tuple[str, str, str]]]:
    """(package edges, room edges): how many modules import across each."""
    pkgs: Counter[tuple[str, str]] = Counter()
    rooms: Counter[tuple[str, str, str]] = Counter()
    for name, path in modules():
        here = where(name)
        assert here is not None
        seen = set()
        for mod in imports_of(path):
            there = where(mod)
            if there is None or there in seen:
                continue
            seen.add(there)
            if there[0] != here[0]:
                pkgs[here[0], there[0]] += 1
            elif there[1] != here[1] and here[0] in ROOMS:
                rooms[here[0], here[1], there[1]] += 1
    return pkgs, rooms


def against_floors() -> list[str]:
    pkgs, rooms = edges()
    wrong = [f"{a} imports {b}" for (a, b) in pkgs if FLOORS[b] >= FLOORS[a]]
    wrong += [f"{p}/{a} imports {p}/{b}" for (p, a, b) in rooms if ROOMS[p][b] >= ROOMS[p][a]]
    wrong += [f"{a} imports {b} by its bare name" for a, b in bare_imports()]
    return wrong


def _matrix(names: list[str], count: dict[tuple[str, str], int]) -> None:
    width = max(map(len, names)) + 2
    print(" " * width + "".join(f"{p:>{width}}" for p in names))
    for a in names:
        print(f"{a:<{width}}" + "".join(f"{count.get((a, b), '') or '.':>{width}}" for b in names))


def main() -> int:
    pkgs, rooms = edges()
    print("packages (row imports column; the number of modules that do)")
    _matrix(sorted(FLOORS, key=FLOORS.__getitem__), pkgs)
    for pkg, floors in ROOMS.items():
        print(f"\nrooms of {pkg}")
        _matrix(
            sorted(floors, key=floors.__getitem__),
            {(a, b): n for (p, a, b), n in rooms.items() if p == pkg},
        )
    wrong = against_floors()
    for line in wrong:
        print(f"against the floors: {line}")
    return 1 if wrong and "--check" in sys.argv else 0


if __name__ == "__main__":
    sys.exit(main())
