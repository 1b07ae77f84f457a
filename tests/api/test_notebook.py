"""examples/elephants.ipynb run top to bottom in a real Jupyter kernel (nbclient, ipykernel)
against the test Redis, its outputs checked against the CLI's on the same capture."""

from __future__ import annotations

import ast
import csv
import io
import json
import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from flowherd.reporter.cli.main import main as reporter_main

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "examples" / "elephants.ipynb"

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]


def _reporter(*args: str) -> str:
    r = CliRunner().invoke(reporter_main, list(args), catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r.output


def _outputs(cell: dict) -> dict[str, str]:
    """mime type -> text of a cell's display outputs (the last of each type)."""
    out: dict[str, str] = {}
    for o in cell.get("outputs", []):
        for mime, data in o.get("data", {}).items():
            out[mime] = data if isinstance(data, str) else "".join(data)
        if o.get("output_type") == "stream":
            out["stream:" + o["name"]] = out.get("stream:" + o["name"], "") + o["text"]
    return out


def _cell(nb: dict, starts: str) -> dict[str, str]:
    for c in nb["cells"]:
        if c["cell_type"] == "code" and c["source"].startswith(starts):
            return _outputs(c)
    raise AssertionError(f"no cell starts with {starts!r}")


def test_notebook_runs_and_its_numbers_equal_the_cli(redis_url: str, conn: object) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    env_before = os.environ.get("FLOWHERD_REDIS_URL")
    os.environ["FLOWHERD_REDIS_URL"] = redis_url  # the kernel inherits it
    try:
        client = nbclient.NotebookClient(
            nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
        )
        client.execute()
    finally:
        if env_before is None:
            os.environ.pop("FLOWHERD_REDIS_URL", None)
        else:
            os.environ["FLOWHERD_REDIS_URL"] = env_before
    cells = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in cells), "a cell did not run"
    errors = [o for c in cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
    raw = nb

    # the capture's state table, the figures and the tables are in the outputs
    assert "complete" in _cell(raw, "cap = flowherd.analyse")["text/html"]
    for starts in ("cap.hist(", "cap.ccdf("):
        assert len(_cell(raw, starts).get("image/png", "")) > 1000, starts
    for starts in (
        "top = cap.top",
        "by_ip = cap.stats",
        "cap.windows()",
        "flows = cap.flows_arrow",
    ):
        assert "<table" in _cell(raw, starts)["text/html"], starts

    # the summary equals `reporter summary --json`'s
    cli = json.loads(_reporter("summary", "elephants", "--json", "--redis-url", redis_url))
    shown = ast.literal_eval(_cell(raw, "summary = cap.summary()")["text/plain"])
    for k in ("packets", "bytes", "flows_uni", "flows_bi", "first_ns", "last_ns"):
        assert shown[k] == cli["summary"][k], k

    # the top flows are `reporter top --format csv`'s, in order
    top_csv = _reporter("top", "elephants", "-n", "10", "--format", "csv", "--redis-url", redis_url)
    rows = list(csv.DictReader(io.StringIO(top_csv)))
    html = _cell(raw, "top = cap.top")["text/html"]
    at = [html.index(f"<td>{r['bytes']}</td>") for r in rows]
    assert at == sorted(at) and len(rows) == 10

    # elephants by rule: the counts of `reporter summary --rule`
    counts = ast.literal_eval(_cell(raw, "rules = [")["text/plain"])
    rules = json.loads(
        _reporter(
            "summary",
            "elephants",
            "--json",
            "--rule",
            "top:10",
            "--rule",
            "3sigma",
            "--rule",
            "load:0.9",
            "--redis-url",
            redis_url,
        )
    )
    for res, rule in zip(rules["elephants"], ("top:10", "3sigma", "load:0.9"), strict=True):
        assert counts[rule] == (res["flows"], res["bytes"]), rule

    # statistics by ip: `reporter stats --key ip` (first key and its bytes)
    stats_csv = _reporter(
        "stats", "elephants", "--key", "ip", "--format", "csv", "--redis-url", redis_url
    )
    first = next(csv.DictReader(io.StringIO(stats_csv)))
    assert f"<td>{first['key']}</td>" in _cell(raw, "by_ip = cap.stats")["text/html"]

    # DuckDB over the Arrow stream: the totals of `reporter flows`
    flows_csv = _reporter("flows", "elephants", "--redis-url", redis_url)
    fl = list(csv.DictReader(io.StringIO(flows_csv)))
    totals = ast.literal_eval(_cell(raw, "totals = ")["text/plain"])
    assert totals == {
        "flows": len(fl),
        "packets": sum(int(r["packets"]) for r in fl),
        "bytes": sum(int(r["bytes"]) for r in fl),
    }
    assert sys.executable  # the kernel ran this interpreter's environment (ipykernel installed)
