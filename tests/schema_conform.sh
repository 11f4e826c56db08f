#!/usr/bin/env bash
# Schema evolution check: the current schemas must conform to the released
# ones (flatc --conform), and the check itself must catch a breaking change.
set -euo pipefail
FLATC="$1"
SCHEMAS="$2"

status=0
for released in "$SCHEMAS"/released/*.fbs; do
  name="$(basename "$released")"
  if ! out="$("$FLATC" --conform "$released" "$SCHEMAS/$name" 2>&1)"; then
    echo "FAIL: schemas/$name breaks compatibility with schemas/released/$name:"
    echo "$out"
    status=1
  else
    echo "ok: schemas/$name conforms to schemas/released/$name"
  fi
done

# Guard against a check that cannot fail: retyping a field must be caught.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
sed 's/^  case_ref: string;/  case_ref: int;/' "$SCHEMAS/envelope.fbs" > "$tmp/envelope.fbs"
if grep -q "case_ref: int" "$tmp/envelope.fbs" &&
   ! "$FLATC" --conform "$SCHEMAS/released/envelope.fbs" "$tmp/envelope.fbs" >/dev/null 2>&1; then
  echo "ok: a breaking change (case_ref retyped) is rejected"
else
  echo "FAIL: flatc --conform did not reject a breaking change"
  status=1
fi
exit $status
