#!/usr/bin/env bash
# A multi-host run on one machine: the broker and two agencies on separate
# network namespaces joined by veth pairs, as they would be on separate
# hosts. Agency A (exit-mombasa) is an HTTPS-only system behind
# liaison-gateway; agency B (youth-welfare-mombasa) uses the CLI agent.
#
#   lsn-a 10.77.1.2 ---- 10.77.1.1 lsn-broker 10.77.2.1 ---- 10.77.2.2 lsn-b
#
# A's system posts a referral over HTTPS to its gateway; the gateway sends it
# through CURVE to the broker across the link; B receives it, policy
# applied. Then B answers and A's system takes the answer from its inbox.
#
# Usage: deploy/netns/run.sh BIN_DIR   (make test-netns). Needs root (ip netns).
set -euo pipefail
BIN="$(cd "${1:-build/bin}" && pwd)"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"

if [ "$(id -u)" -ne 0 ] || ! command -v ip >/dev/null; then
  echo "SKIP: the network-namespace run needs root and iproute2 (ip netns); run as root: make test-netns"
  exit 0
fi

WORK="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  for ns in lsn-broker lsn-a lsn-b; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
say() { printf '\n== %s\n' "$*"; }

say "hosts: three network namespaces, two links"
for ns in lsn-broker lsn-a lsn-b; do
  ip netns del "$ns" 2>/dev/null || true
  ip netns add "$ns"
  ip -n "$ns" link set lo up
done
ip link add lsn-ba type veth peer name lsn-ab
ip link set lsn-ba netns lsn-broker
ip link set lsn-ab netns lsn-a
ip link add lsn-bb type veth peer name lsn-bb2
ip link set lsn-bb netns lsn-broker
ip link set lsn-bb2 netns lsn-b
ip -n lsn-broker addr add 10.77.1.1/24 dev lsn-ba
ip -n lsn-a addr add 10.77.1.2/24 dev lsn-ab
ip -n lsn-broker addr add 10.77.2.1/24 dev lsn-bb
ip -n lsn-b addr add 10.77.2.2/24 dev lsn-bb2
for pair in "lsn-broker lsn-ba" "lsn-broker lsn-bb" "lsn-a lsn-ab" "lsn-b lsn-bb2"; do
  set -- $pair
  ip -n "$1" link set "$2" up
done
ip -n lsn-a -brief addr show lsn-ab
ip -n lsn-broker -brief addr show
ip -n lsn-b -brief addr show lsn-bb2

say "broker host: keys, policies, broker listening on both links"
mkdir -p "$WORK"/{broker/keys,broker/policies,a/keys,a/tls,b/keys}
cp -r "$ROOT/policies/vocabulary.yaml" "$ROOT/policies/agencies" "$WORK/broker/policies/"
"$BIN/liaison" keygen --out "$WORK/broker/keys" --name broker >/dev/null
"$BIN/liaison" keygen --store-key "$WORK/broker/keys/store.key" >/dev/null
"$BIN/liaison" keygen --pseudonym-key "$WORK/broker/keys/pseudonym.key" >/dev/null
"$BIN/liaison" keygen --ledger-key "$WORK/broker/keys" >/dev/null
register() {  # register AGENCY_ID DIR: the agency makes its keys, the operator registers the .pub
  "$BIN/liaison" keygen --out "$2/keys" --name "$1" >/dev/null
  local key; key="$(grep -v '^#' "$2/keys/$1.pub")"
  sed -i "s|^public_key:.*|public_key: \"${key//&/\\&}\"|" "$WORK/broker/policies/agencies/$1.yaml"
  cp "$WORK/broker/keys/broker.pub" "$2/keys/"
}
register exit-mombasa "$WORK/a"
register youth-welfare-mombasa "$WORK/b"
cat > "$WORK/broker/broker.yaml" <<YAML
listen: tcp://0.0.0.0:7700
secret_key_file: keys/broker.key
pseudonym_key_file: keys/pseudonym.key
policies_dir: policies
store: {path: liaison.db, key_file: keys/store.key}
ledger: {path: ledger.log, signing_key_file: keys/ledger-signing.key}
admin: {listen: 127.0.0.1:9464}
log: {console: false, file: broker.log}
YAML
ip netns exec lsn-broker "$BIN/liaison-broker" --config "$WORK/broker/broker.yaml" --ready-file "$WORK/broker/ready" &
pids+=($!)
for _ in $(seq 100); do [ -s "$WORK/broker/ready" ] && break; sleep 0.1; done
[ -s "$WORK/broker/ready" ] || { echo "FAIL: broker did not start"; cat "$WORK/broker/broker.log"; exit 1; }

say "agency A host: liaison-gateway (HTTPS on its own loopback), broker at 10.77.1.1"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/a/tls/gateway.key" \
  -out "$WORK/a/tls/gateway.pem" -days 1 -subj /CN=localhost -addext "subjectAltName=IP:127.0.0.1" 2>/dev/null
"$BIN/liaison" keygen --token "$WORK/a/token" >/dev/null
cat > "$WORK/a/agent.yaml" <<YAML
broker: tcp://10.77.1.1:7700
broker_public_key_file: keys/broker.pub
secret_key_file: keys/exit-mombasa.key
YAML
cat > "$WORK/a/gateway.yaml" <<YAML
agent_config: agent.yaml
listen: 127.0.0.1:8443
tls: {certificate_file: tls/gateway.pem, private_key_file: tls/gateway.key}
token_file: token
state_file: gateway.db
log: {console: false, file: gateway.log}
YAML
ip netns exec lsn-a "$BIN/liaison-gateway" --config "$WORK/a/gateway.yaml" --ready-file "$WORK/a/ready" &
pids+=($!)
for _ in $(seq 100); do [ -s "$WORK/a/ready" ] && break; sleep 0.1; done
[ -s "$WORK/a/ready" ] || { echo "FAIL: gateway did not start"; cat "$WORK/a/gateway.log"; exit 1; }

say "agency B host: liaison listen, broker at 10.77.2.1"
cat > "$WORK/b/agent.yaml" <<YAML
broker: tcp://10.77.2.1:7700
broker_public_key_file: keys/broker.pub
secret_key_file: keys/youth-welfare-mombasa.key
YAML
ip netns exec lsn-b "$BIN/liaison" listen --config "$WORK/b/agent.yaml" --count 1 --out "$WORK/b/inbox" \
  2>"$WORK/b/listen.log" &
listener=$!
pids+=($listener)

curl_a() { ip netns exec lsn-a curl -sS --max-time 30 --cacert "$WORK/a/tls/gateway.pem" \
  -H "Authorization: Bearer $(cat "$WORK/a/token")" "$@"; }

say "A's system: POST /v1/messages (the referral of BRIEF scenario 1, to youth welfare)"
python3 - "$ROOT/policies/tests/messages/01-exit-to-youth-welfare.json" > "$WORK/a/referral.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
m["to"] = [{"agency": "youth-welfare-mombasa"}]
print(json.dumps(m))
PY
accepted="$(curl_a -H 'Content-Type: application/json' --data-binary @"$WORK/a/referral.json" https://127.0.0.1:8443/v1/messages)"
echo "$accepted"
url="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["receipt_url"])' "$accepted")"
receipt=""
for _ in $(seq 100); do
  receipt="$(curl_a -w ' %{http_code}' "https://127.0.0.1:8443$url")"
  [ "${receipt##* }" = 200 ] && break
  sleep 0.1
done
echo "receipt: ${receipt% *}"
grep -qE '"code": "(stored|delivered)"' <<<"$receipt" || { echo "FAIL: not stored for youth welfare"; exit 1; }

say "B receives it across the other link, with the policies applied"
wait "$listener"
received="$(cat "$WORK"/b/inbox/*.json)"
grep -q '"given_name": "Amani"' <<<"$received" || { echo "FAIL: B did not receive the referral"; exit 1; }
if grep -q '"phone": "+254700000001"' <<<"$received"; then echo "FAIL: the phone number was not dropped"; exit 1; fi
echo "B got the referral; the subject's phone number was dropped by policy, the national id pseudonymised:"
grep -o '"national_id": "[^"]*"' <<<"$received" || true

say "B answers; A's system takes it from its inbox and acks"
cat > "$WORK/b/answer.json" <<'JSON'
{"case_ref": "YW-MSA-2026-0101", "purpose": "referral-for-services", "legal_basis": "child-protection",
 "payload_type": "ReferralResponse", "payload": {"decision": "accepted"}}
JSON
ip netns exec lsn-b "$BIN/liaison" send --config "$WORK/b/agent.yaml" --to exit-mombasa "$WORK/b/answer.json" >/dev/null
inbox="$(curl_a 'https://127.0.0.1:8443/v1/inbox?wait=10')"
echo "$inbox" | head -c 300; echo
id="$(python3 -c 'import json,sys; m=json.loads(sys.argv[1])["messages"]; print(m[0]["from"] + "/" + m[0]["id"] if m else "")' "$inbox")"
[ -n "$id" ] || { echo "FAIL: A's inbox is empty"; exit 1; }
curl_a -X POST "https://127.0.0.1:8443/v1/inbox/$id/ack"; echo

say "the broker's ledger verifies"
kill "${pids[0]}"; wait "${pids[0]}" 2>/dev/null || true
"$BIN/liaison" audit verify --ledger "$WORK/broker/ledger.log" --public-key "$WORK/broker/keys/ledger-signing.pub"
echo "ok: broker and agencies on separate network namespaces exchanged a referral and an answer"
