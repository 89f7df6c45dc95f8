#!/usr/bin/env bash
# The test suite on both cores: two pytest processes side by side. One runs the long multi-process modules
# (marked `serial`: chaos, storms of withdrawals, outages, restarts, the quick start) one after another; the
# other runs everything else. Two of those long modules side by side would starve each other's timeouts.
# Each process has its own temporary directory; the exit status is the worse of the two.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
base=$(mktemp -d /tmp/custody-tests.XXXXXX)
trap 'rm -rf "$base"' EXIT

$PY -m pytest -m serial --basetemp "$base/serial" -p no:cacheprovider "$@" >"$base/serial.log" 2>&1 &
serial=$!
$PY -m pytest -m "not serial" --basetemp "$base/rest" -p no:cacheprovider "$@"
rest=$?
wait "$serial"
serial_rc=$?
echo
echo "== the long multi-process modules (pytest -m serial), run beside the rest:"
cat "$base/serial.log"
if [ "$rest" -ne 0 ] || [ "$serial_rc" -ne 0 ]; then
    exit 1
fi
