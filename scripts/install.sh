#!/usr/bin/env bash
# Install what flowherd needs on a Debian/Ubuntu machine: a virtual environment with the
# package (and test tools with --test), redis-server when none is on PATH, and libpcap (for
# `producer sniff` filters); tshark too with --test, for the capture-reader comparisons.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

apt_install() {
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  if ! $sudo apt-get install -y -q "$@" >/dev/null 2>&1; then
    $sudo apt-get update -q >/dev/null
    $sudo apt-get install -y -q "$@" >/dev/null
  fi
}

need=()
command -v redis-server >/dev/null || need+=(redis-server)
# redis-cli joins the nodes of a local Redis Cluster (deploy/cluster.py, the cluster tests)
command -v redis-cli >/dev/null || need+=(redis-tools)
# libpcap compiles the BPF filters of `producer sniff`
ldconfig -p 2>/dev/null | grep -q 'libpcap\.so\.0\.8' || need+=(libpcap0.8)
if [ "$want_test" = 1 ]; then
  command -v tshark >/dev/null || need+=(tshark)
  # `ip netns` and bridges for the host tests (lab/hosts.py)
  command -v ip >/dev/null || need+=(iproute2)
  # headless Chromium and its WebDriver for the web view's browser tests (tests/reporter/test_web_browser.py)
  command -v chromium >/dev/null || need+=(chromium)
  command -v chromedriver >/dev/null || need+=(chromium-driver)
  # nfcapd and nfdump: the IPFIX collector of tests/reporter/test_ipfix_nfdump.py
  command -v nfcapd >/dev/null || need+=(nfdump)
  # tcpreplay replays captures onto veth pairs for the live-capture tests (tests/producer/test_live.py)
  command -v tcpreplay >/dev/null || need+=(tcpreplay)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} with apt-get" >&2
  apt_install "${need[@]}"
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# plots and the web view by default; the test tools (and every extra) with --test. A host that
# only runs workers can `pip install flowherd` alone (docs/operations.md).
extra="[plot,web]"
[ "$want_test" = 1 ] && extra="[test]"
# the locked versions (`make lock` refreshes constraints.txt)
constraints=()
[ -f constraints.txt ] && constraints=(-c constraints.txt)
stamp=".venv/.installed${extra}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  log=.venv/install.log
  if ! { .venv/bin/python -m pip install -q --upgrade pip && .venv/bin/python -m pip install -q "${constraints[@]}" -e ".${extra}"; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "error: pip install failed (log above, also in $log)" >&2
    exit 1
  fi
  touch "$stamp"
fi
echo "flowherd installed in .venv ($(.venv/bin/python --version)); redis-server: $(command -v redis-server)" >&2
