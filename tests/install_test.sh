#!/usr/bin/env bash
# Installs into a temporary prefix and checks that every piece is there.
set -euo pipefail
BUILD="$1"
prefix="$(mktemp -d)"
trap 'rm -rf "$prefix"' EXIT
cmake --install "$BUILD" --prefix "$prefix" >/dev/null
status=0
for f in bin/liaison-broker bin/liaison lib/systemd/system/liaison-broker.service \
         share/doc/liaison/examples/broker.yaml share/doc/liaison/examples/agent.yaml \
         share/liaison/policies/vocabulary.yaml share/liaison/policies/agencies/exit-mombasa.yaml \
         share/doc/liaison/protocol.md share/doc/liaison/grafana/liaison-dashboard.json; do
  if [ -e "$prefix/$f" ]; then echo "ok: $f"; else echo "MISSING: $f"; status=1; fi
done
# The installed binaries run.
"$prefix/bin/liaison" policy check "$prefix/share/liaison/policies" >/dev/null 2>&1 || {
  echo "FAIL: the installed liaison cannot check the installed policies"; status=1; }
exit $status
