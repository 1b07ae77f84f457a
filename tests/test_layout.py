"""The house: one import package, ``flowherd``; its packages and the rooms inside them import
only what is below them (``scripts/imports.py`` holds the floors); nothing imports a role
folder by its bare name; benchmarks import the package, never the tests."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import flowherd

ROOT = Path(__file__).resolve().parents[1]


def _imports_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("imports", ROOT / "scripts" / "imports.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_imports_follow_the_floors() -> None:
    mod = _imports_module()
    assert mod.against_floors() == []
    pkgs, rooms = mod.edges()
    assert ("producer", "reporter") not in pkgs and ("producer", "workers") not in pkgs
    # the check reads real imports: it can fail
    assert ("store", "deploy") in pkgs
    assert ("reporter", "cli", "query") in rooms
    assert not any(a == "web" and b == "cli" for _, a, b in rooms)


def test_the_floors_check_catches_an_import_against_them(tmp_path: Path) -> None:
    mod = _imports_module()
    assert mod.where("flowherd.reporter.table.views") == ("reporter", "table")
    assert mod.where("flowherd.reporter.web") == ("reporter", "web")
    assert mod.where("flowherd.reporter.job") == ("reporter", ".")
    assert mod.where("flowherd.models.report") == ("models", ".")
    assert mod.where("flowherd") == ("api", ".")
    assert mod.where("numpy") is None
    assert mod.ROOMS["reporter"]["table"] < mod.ROOMS["reporter"]["cli"]


def test_every_role_folder_is_a_subpackage_of_flowherd() -> None:
    links = {p.name: p for p in (ROOT / "flowherd").iterdir() if p.is_symlink()}
    assert set(links) == {"models", "deploy", "store", "console", "workers", "reporter",
                          "producer", "lab"}  # fmt: skip
    for name, link in links.items():
        assert link.resolve() == ROOT / name
        assert (ROOT / name / "__init__.py").is_file()
    assert set(_imports_module().FLOORS) == set(links) | {"api"}


def test_public_names_are_stated_and_documented() -> None:
    assert sorted(flowherd.__all__) == flowherd.__all__
    for name in flowherd.__all__:
        obj = getattr(flowherd, name)
        if name != "__version__":
            assert obj.__doc__, name
            assert obj.__module__.startswith("flowherd."), name
    public = {n for n in vars(flowherd) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(flowherd, n)).__name__ == "module"}
    assert public - modules - {"annotations"} <= set(flowherd.__all__)
    # the Python API's reference names every public name and method, each with a docstring
    guide = (ROOT / "docs" / "python.md").read_text()
    for name in flowherd.__all__:
        assert name == "__version__" or name in guide, name
    for name, member in vars(flowherd.Capture).items():
        if not name.startswith("_"):
            assert member.__doc__, f"Capture.{name}"
            assert f".{name}" in guide, f"Capture.{name}"


def test_benchmarks_import_the_package_not_the_tests() -> None:
    for path in sorted((ROOT / "bench").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            assert not any(n.split(".")[0] == "tests" for n in names), path.name


def test_commands_run_as_modules_of_the_package(tmp_path: Path) -> None:
    """``python -m flowherd.producer`` (workers, reporter) works outside the repository, and no
    code runs a role folder by its bare name (which works only from the repository root)."""
    import subprocess
    import sys

    for cmd in ("producer", "workers", "reporter"):
        r = subprocess.run(
            [sys.executable, "-m", f"flowherd.{cmd}", "--help"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0 and "Usage:" in r.stdout, r.stderr
    bare = re.compile(
        r"""["']-m["'],\s*["'](models|deploy|store|console|workers|reporter|producer|lab)["']"""
    )
    for path in ROOT.rglob("*.py"):
        if ".venv" in path.parts:
            continue
        assert not bare.search(path.read_text()), path


def test_the_api_loads_on_first_use(tmp_path: Path) -> None:
    """A worker (or any command) importing its package does not pull in the Python API and,
    through it, the reporter; the API's names still resolve on first use."""
    import subprocess
    import sys

    code = (
        "import sys, flowherd.workers.jobs, flowherd.producer.cli.main; "
        "print(sorted(m for m in sys.modules if m.startswith(('flowherd.reporter', 'flowherd.api', 'pandas')))); "
        "import flowherd; print(flowherd.analyse.__module__, flowherd.Capture.__module__)"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                       timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
    loaded, names = r.stdout.splitlines()
    assert loaded == "[]"
    assert names == "flowherd.api flowherd.capture"
