#!/usr/bin/env python3
"""Hosts that come and go (needs root): the scenarios of tests/deploy/test_hosts.py, with their times.

Builds a LAN of network namespaces on a bridge (lab/hosts.py): a Redis host with a password,
a producer host and three worker hosts running `workers run -n 1`, then runs, on a generated
capture, each scenario of lab/scenarios.py and prints what it found: the capture spread over the
hosts; one worker host SIGKILLed mid-batch; one worker host's link down for --down seconds
mid-batch; SIGTERM to `workers run` with its link down (idle, and mid-batch). Tables are
compared byte for byte with a run on one host. Exit status 0 when every outcome is as expected.

    sudo .venv/bin/python bench/hosts.py [--flows 600] [--down 15] [--keep DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flowherd.lab import scenarios
from flowherd.lab.fleet import Fleet
from flowherd.lab.hosts import Lan, available
from flowherd.lab.scenarios import Outcome
from flowherd.producer.traces.sample import write_sample


def as_expected(out: Outcome) -> bool:
    if "stopped" in out.seconds:  # SIGTERM: within 10 s; a capture, if any, exact
        done = not out.state or (out.state == "complete" and out.identical)
        return out.seconds["stopped"] <= 10 and done
    return out.state == "complete" and out.identical


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flows", type=int, default=600, help="flows of the generated capture")
    ap.add_argument("--down", type=float, default=15, help="seconds the worker link is down")
    ap.add_argument("--keep", type=Path, help="keep logs and Redis data in this directory")
    args = ap.parse_args()
    if why := available():
        print(f"error: {why}", file=sys.stderr)
        return 1
    work = args.keep or Path(tempfile.mkdtemp(prefix="flowherd-hosts-"))
    pcap = work / "hosts.pcap"
    truth = write_sample(pcap, flows=args.flows, seed=31)
    print(
        f"capture: {sum(v[0] for v in truth.values())} frames, {len(truth)} flows; logs in {work}"
    )
    outcomes: list[Outcome] = []
    with Lan(work) as lan:
        hosts = Fleet.build(lan, workers=3)
        uni, bi, took = scenarios.one_host(lan, pcap)
        print(f"{'one host (reference)':<26} complete  complete={took:.1f}s")
        ref = (uni, bi)
        runs: list[tuple[str, Callable[[Fleet], Outcome]]] = [
            ("spread", lambda f: scenarios.spread(f, pcap, ref)),
            ("killed", lambda f: scenarios.host_killed(f, pcap, ref)),
            ("flap", lambda f: scenarios.link_flap(f, pcap, ref, down=args.down)),
            ("sigterm idle", lambda f: scenarios.sigterm_unreachable(f, pcap, ref, busy=False)),
            ("sigterm busy", lambda f: scenarios.sigterm_unreachable(f, pcap, ref, busy=True)),
        ]
        for name, run in runs:
            fleet = hosts.on_queue(f"q{uuid.uuid4().hex[:8]}")
            try:
                out = run(fleet)
            except AssertionError as exc:  # a condition never came: report it, go on
                out = Outcome(name, state="error", facts={"error": str(exc)[:300]})
            finally:
                fleet.stop_all()
            print(out.line(), "" if as_expected(out) else "  <-- unexpected", flush=True)
            outcomes.append(out)
    ok = all(as_expected(o) for o in outcomes)
    if ok and not args.keep:
        shutil.rmtree(work)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
