#!/usr/bin/env bash
# Every log event the docs name is one the code emits: the `event=NAME`
# mentions in docs/*.md and README.md, and the events (and `key=value`
# reasons) in the first column of docs/operations.md's alert table must
# appear as `event=NAME` (or the literal `key=value`) in the sources of the
# broker, the agents and the gateway. An operator alerting on a documented
# name must be alerting on something that happens.
set -euo pipefail
SRC="$(cd "$1" && pwd)"
cd "$SRC"

sources=(broker/src agents)
names="$(mktemp)"
trap 'rm -f "$names"' EXIT

# event=NAME anywhere in the docs (in code spans or examples).
grep -ohE 'event=[a-z][a-z0-9_]*' docs/*.md README.md | sort -u > "$names"
# The alert table of docs/operations.md: every `token` of its first column.
awk '
  /^\| Event \| Meaning \|/ { table = 1; next }
  table && !/^\|/ { table = 0 }
  table { split($0, cells, "|"); print cells[2] }
' docs/operations.md | grep -oE '`[^`]+`' | tr -d '`' |
  while read -r token; do
    case "$token" in
      *=*) echo "$token" ;;
      *) echo "event=$token" ;;
    esac
  done | sort -u >> "$names"
count="$(sort -u "$names" | wc -l)"
[ "$count" -ge 20 ] || { echo "FAIL: only $count event names found in the docs (the table moved?)"; exit 1; }

missing=0
for name in $(sort -u "$names"); do
  if ! grep -rqF --include='*.cc' --include='*.h' -- "$name" "${sources[@]}"; then
    echo "FAIL: the docs name $name, but no source emits it"
    missing=$((missing + 1))
  fi
done
[ "$missing" -eq 0 ] || exit 1
echo "ok: all $count event names in the docs are emitted by the code"
