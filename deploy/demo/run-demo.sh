#!/usr/bin/env bash
# liaison demo: generates keys, starts the broker and one listening agent per
# example agency on loopback, sends the BRIEF section 6 scenarios, shows the
# receipts and what each agency received, then stops everything it started.
#
# Usage: deploy/demo/run-demo.sh [BIN_DIR] [WORK_DIR]
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BIN="$(cd "${1:-$ROOT/build/bin}" && pwd)"
WORK="${2:-$ROOT/build/demo}"
SCENARIOS="$ROOT/policies/tests/messages"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

rm -rf "$WORK"
mkdir -p "$WORK"/{keys,policies,agents,inbox,logs}
cp -r "$ROOT/policies/vocabulary.yaml" "$ROOT/policies/agencies" "$WORK/policies/"
# Response deadlines of seconds instead of hours (docs/policies.md section 3),
# so that the demo shows an unanswered green referral escalated; the exit
# programme names the county coordinator as its escalation contact.
printf 'response_deadlines:\n  green: 4s\n' >> "$WORK/policies/vocabulary.yaml"
printf '\nescalation:\n  agency: coordinator-mombasa\n' >> "$WORK/policies/agencies/exit-mombasa.yaml"
# Reintegration in Kwale takes handovers from youth welfare too, so that in
# the demo only the handling code (H2) stops youth welfare passing the exit
# programme's referral on (docs/policies.md, "Handling codes").
sed -i '/id: handovers/,/messages:/ s/kinds: \[prison-service, probation-service, exit-programme\]/kinds: [prison-service, probation-service, exit-programme, youth-welfare]/' \
  "$WORK/policies/agencies/reintegration-kwale.yaml"

say "Keys: one CURVE key pair for the broker and for each agency (never committed)"
"$BIN/liaison" keygen --out "$WORK/keys" --name broker >/dev/null
"$BIN/liaison" keygen --store-key "$WORK/keys/store.key" >/dev/null
"$BIN/liaison" keygen --pseudonym-key "$WORK/keys/pseudonym.key" >/dev/null
"$BIN/liaison" keygen --ledger-key "$WORK/keys" >/dev/null
agencies=()
for file in "$WORK"/policies/agencies/*.yaml; do
  id="$(basename "$file" .yaml)"
  agencies+=("$id")
  "$BIN/liaison" keygen --out "$WORK/keys" --name "$id" >/dev/null
  # Onboarding: register the agency's public key in its policy file.
  key="$(grep -v '^#' "$WORK/keys/$id.pub")"
  sed -i "s|^public_key:.*|public_key: \"${key//&/\\&}\"|" "$file"
done
echo "registered ${#agencies[@]} agencies: ${agencies[*]}"

cat > "$WORK/broker.yaml" <<YAML
listen: tcp://127.0.0.1:*
secret_key_file: keys/broker.key
pseudonym_key_file: keys/pseudonym.key
policies_dir: policies
store:
  path: liaison.db
  key_file: keys/store.key
ledger:
  path: ledger.log
  signing_key_file: keys/ledger-signing.key
admin:
  listen: 127.0.0.1:0
log:
  level: info
  console: false
  file: logs/broker.log
YAML

say "Broker: CURVE on, ZAP admits only registered keys"
"$BIN/liaison-broker" --config "$WORK/broker.yaml" --ready-file "$WORK/endpoint" &
pids+=($!)
for _ in $(seq 100); do [ -s "$WORK/endpoint" ] && break; sleep 0.1; done
[ -s "$WORK/endpoint" ] || { echo "broker did not start; see $WORK/logs/broker.log"; exit 1; }
endpoint="$(cat "$WORK/endpoint")"
echo "listening on $endpoint"
# The demo runs unsigned (its agencies have no DPOs to sign): the broker
# says so in its log and on /readyz; docs/operations.md ("Policy signing")
# turns signing on.
if grep -q "event=policy_signing_off" "$WORK/logs/broker.log"; then
  echo "policy signing: OFF (unsigned mode, announced by the broker); see docs/operations.md \"Policy signing\""
fi

for id in "${agencies[@]}"; do
  cat > "$WORK/agents/$id.yaml" <<YAML
broker: $endpoint
broker_public_key_file: ../keys/broker.pub
secret_key_file: ../keys/$id.key
receipt_timeout_ms: 5000
YAML
  "$BIN/liaison" listen --config "$WORK/agents/$id.yaml" --out "$WORK/inbox/$id" \
    2>>"$WORK/logs/$id.log" &
  pids+=($!)
done
for _ in $(seq 100); do
  [ "$(grep -c 'event=connect .*role=receiver' "$WORK/logs/broker.log" 2>/dev/null)" -ge "${#agencies[@]}" ] && break
  sleep 0.1
done
echo "${#agencies[@]} agents connected and listening"

failures=0
send() {  # send EXPECTED_EXIT_CODE FROM FILE TO...
  local expected="$1" from="$2" file="$3"; shift 3
  local args=() rc=0
  for to in "$@"; do args+=(--to "$to"); done
  "$BIN/liaison" send --config "$WORK/agents/$from.yaml" "${args[@]}" "$file" \
    >"$WORK/last-receipt.json" 2>"$WORK/last-error.txt" || rc=$?
  python3 "$ROOT/deploy/demo/show.py" receipt "$from" "$(basename "$file")" "$rc" \
    "$WORK/last-receipt.json" "$WORK/last-error.txt"
  if [ "$rc" != "$expected" ]; then
    echo "  UNEXPECTED: exit code $rc, expected $expected"
    failures=$((failures + 1))
  fi
}

say "Scenarios (BRIEF section 6) sent with \`liaison send\`"
send 0 exit-mombasa "$SCENARIOS/01-exit-to-youth-welfare.json" youth-welfare-mombasa
send 0 exit-mombasa "$SCENARIOS/02-exit-to-security-break-glass.json" kind:security-agency@mombasa
send 0 health-mombasa "$SCENARIOS/03-health-response.json" exit-mombasa
send 0 prison-shimo "$SCENARIOS/04-prison-handover.json" reintegration-kwale
send 0 community-likoni "$SCENARIOS/05-incident-report.json" kind:county-coordinator@mombasa
# The withdrawal also reaches security-coast, which received the case under break-glass.
send 0 exit-mombasa "$SCENARIOS/06-erasure.json" youth-welfare-mombasa

say "Denied by policy: the same referral to the security agency, without break-glass"
send 3 exit-mombasa "$SCENARIOS/01-exit-to-youth-welfare.json" kind:security-agency@mombasa

say "Errors get clear receipts"
send 3 exit-mombasa "$SCENARIOS/01-exit-to-youth-welfare.json" kind:probation-service@lamu
send 3 exit-mombasa "$SCENARIOS/01-exit-to-youth-welfare.json" no-such-agency youth-welfare-mombasa
echo '{"payload_type": "CaseClosure", "payload": {"outcome": "finished"}}' > "$WORK/bad.json"
send 2 exit-mombasa "$WORK/bad.json" youth-welfare-mombasa

sleep 0.5
say "What each agency received"
python3 "$ROOT/deploy/demo/show.py" inbox "$WORK/inbox"

say "Handling code H2: youth welfare may answer the exit programme, but not pass its H2 referral on"
# The thread reference the broker gave youth welfare's copy of the referral.
thread="$(python3 - "$WORK/inbox/youth-welfare-mombasa" <<'PY'
import json, os, sys
folder = sys.argv[1]
for name in sorted(os.listdir(folder)):
    with open(os.path.join(folder, name)) as f:
        m = json.load(f)
    if m.get("payload_type") == "CaseReferral" and m.get("handling") == "H2" and m.get("thread"):
        print(m["thread"])
        break
PY
)"
echo "  youth-welfare-mombasa's copy of the referral carries thread $thread"
cat > "$WORK/onward-update.json" <<JSON
{"case_ref": "YW-MSA-2026-0311", "purpose": "case-coordination", "derived_from": "$thread",
 "payload_type": "CaseUpdate", "payload": {"status": "in_progress"}}
JSON
send 3 youth-welfare-mombasa "$WORK/onward-update.json" reintegration-kwale
if ! grep -q '"handling-h2"' "$WORK/last-receipt.json"; then
  echo "  UNEXPECTED: the onward update was not denied with handling-h2"
  failures=$((failures + 1))
fi

say "Response deadlines: the green referral to youth welfare was not answered within 4 s (the demo's override)"
for _ in $(seq 100); do
  waiting=0
  for id in exit-mombasa youth-welfare-mombasa coordinator-mombasa; do
    grep -q '^overdue: ' "$WORK/logs/$id.log" 2>/dev/null || waiting=1
  done
  [ "$waiting" = 0 ] && break
  sleep 0.1
done
shown=0
for id in exit-mombasa youth-welfare-mombasa coordinator-mombasa; do
  line="$(grep -m1 '^overdue: ' "$WORK/logs/$id.log" 2>/dev/null || true)"
  [ -n "$line" ] && shown=$((shown + 1))
  echo "  $id: ${line:-(no overdue notice)}"
done
if [ "$shown" != 3 ]; then
  echo "  UNEXPECTED: overdue notices for $shown of the 3 agencies"
  failures=$((failures + 1))
fi

say "Broker log (events and names only, never message contents)"
tail -n 12 "$WORK/logs/broker.log"
echo

say "Disclosure ledger: every decision, hash-chained and signed (names only, never values)"
kill -TERM "${pids[0]}" 2>/dev/null && wait "${pids[0]}" 2>/dev/null || true  # final checkpoint
if ! "$BIN/liaison" audit verify --ledger "$WORK/ledger.log" --public-key "$WORK/keys/ledger-signing.pub"; then
  failures=$((failures + 1))
fi
echo
echo "Who received data of case EXIT-MSA-2026-0042, when, under which rules:"
"$BIN/liaison" audit query --ledger "$WORK/ledger.log" --case EXIT-MSA-2026-0042 \
  --sender exit-mombasa --pseudonym-key "$WORK/keys/pseudonym.key" --format csv > "$WORK/case-query.csv"
awk -F, '{printf "%-26s %-12s %-14s %-23s %-16s %s\n", $2, $3, $6, $7, $8, $12}' "$WORK/case-query.csv"
if ! grep -q "break_glass,.*security-coast" "$WORK/case-query.csv"; then
  echo "UNEXPECTED: the case query does not show the break-glass disclosure"
  failures=$((failures + 1))
fi

say "Monitoring and evaluation report for this month, from the ledger alone (cells below 5 show as <5)"
if ! "$BIN/liaison" report --ledger "$WORK/ledger.log" --period month --from "$(date -u +%Y-%m-01)" \
    --svg "$WORK/flows.svg"; then
  failures=$((failures + 1))
fi

# The demo checks itself, so that `make test` notices when it breaks.
for expected in youth-welfare-mombasa:3 security-coast:2 exit-mombasa:1 reintegration-kwale:1 \
                coordinator-mombasa:1; do
  agency="${expected%%:*}" want="${expected##*:}"
  got="$(ls "$WORK/inbox/$agency" 2>/dev/null | wc -l)"
  if [ "$got" != "$want" ]; then
    echo "UNEXPECTED: $agency received $got message(s), expected $want"
    failures=$((failures + 1))
  fi
done
if [ "$failures" -ne 0 ]; then
  echo "demo: $failures unexpected result(s)"
  exit 1
fi
echo "demo: all scenarios behaved as expected"
