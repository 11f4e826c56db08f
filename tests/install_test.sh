#!/usr/bin/env bash
# Installs into a temporary prefix and checks that every piece is there.
set -euo pipefail
BUILD="$1"
prefix="$(mktemp -d)"
trap 'rm -rf "$prefix"' EXIT
cmake --install "$BUILD" --prefix "$prefix" >/dev/null
status=0
for f in bin/liaison-broker bin/liaison bin/liaison-gateway lib/systemd/system/liaison-broker.service \
         lib/systemd/system/liaison-gateway@.service share/doc/liaison/examples/gateway.yaml \
         share/doc/liaison/operations.md share/doc/liaison/openapi.yaml \
         share/doc/liaison/examples/broker.yaml share/doc/liaison/examples/agent.yaml \
         share/liaison/policies/vocabulary.yaml share/liaison/policies/agencies/exit-mombasa.yaml \
         share/doc/liaison/protocol.md share/doc/liaison/grafana/liaison-dashboard.json; do
  if [ -e "$prefix/$f" ]; then echo "ok: $f"; else echo "MISSING: $f"; status=1; fi
done
# The units start the binaries of this prefix (PREFIX=/opt/liaison works).
grep -q "^ExecStart=$prefix/bin/liaison-broker " "$prefix/lib/systemd/system/liaison-broker.service" || {
  echo "FAIL: the broker unit does not start $prefix/bin/liaison-broker"; status=1; }
# The installed binaries run.
"$prefix/bin/liaison" policy check "$prefix/share/liaison/policies" >/dev/null 2>&1 || {
  echo "FAIL: the installed liaison cannot check the installed policies"; status=1; }
# The installed policies carry everything their DPO tests need.
"$prefix/bin/liaison" policy test "$prefix/share/liaison/policies" >/dev/null 2>&1 || {
  echo "FAIL: the DPO tests of the installed policies do not pass"; status=1; }
# The installed gateway reads the example config far enough to name what is missing.
if out="$("$prefix/bin/liaison-gateway" --config "$prefix/share/doc/liaison/examples/gateway.yaml" 2>&1)"; then
  echo "FAIL: the gateway started from the example config without its keys"; status=1
elif ! grep -q "gateway.yaml" <<<"$out"; then
  echo "FAIL: the gateway's error does not name its config file: $out"; status=1
else
  echo "ok: liaison-gateway names what is missing: $out"
fi
# The units are well formed where systemd-analyze exists.
if command -v systemd-analyze >/dev/null 2>&1; then
  for unit in liaison-broker.service liaison-gateway@.service; do
    systemd-analyze verify "$prefix/lib/systemd/system/$unit" 2>&1 | grep -v "Command .* is not executable\|not found\|is not executable" || true
  done
fi
exit $status
