#!/usr/bin/env bash
# The `liaison` CLI's offline behaviour: keygen files and modes, and clear
# errors with exit codes for bad input (the online paths run in the demo
# test and the integration tests).
set -uo pipefail
BIN="$1"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
fail=0
check() {  # check DESCRIPTION CONDITION...
  local what="$1"; shift
  if "$@"; then echo "ok: $what"; else echo "FAIL: $what"; fail=1; fi
}

"$BIN/liaison" keygen --out "$tmp/keys" --name agency-x > "$tmp/out" 2>&1
check "keygen succeeds" test $? -eq 0
check "secret key is mode 600" test "$(stat -c %a "$tmp/keys/agency-x.key")" = 600
check "public key is 40 characters" test "$(grep -v '^#' "$tmp/keys/agency-x.pub" | tr -d '\n' | wc -c)" -eq 40
"$BIN/liaison" keygen --out "$tmp/keys" --name agency-x > "$tmp/out" 2>&1
check "keygen refuses to overwrite" test $? -ne 0
check "and says so" grep -q "remove it first" "$tmp/out"

"$BIN/liaison" keygen --out "$tmp/keys" --name broker > /dev/null
"$BIN/liaison" keygen --pseudonym-key "$tmp/keys/pseudonym.key" > "$tmp/out" 2>&1
check "pseudonym keygen succeeds" test $? -eq 0
check "pseudonym key is mode 600" test "$(stat -c %a "$tmp/keys/pseudonym.key")" = 600
check "pseudonym key is 64 hex digits" grep -qE '^[0-9a-f]{64}$' "$tmp/keys/pseudonym.key"
"$BIN/liaison" keygen --pseudonym-key "$tmp/keys/kept.key" --from-broker-key "$tmp/keys/broker.key" > "$tmp/out" 2>&1
check "pseudonym key from the broker's key" grep -q "same pseudonyms as before" "$tmp/out"
"$BIN/liaison" keygen --pseudonym-key "$tmp/keys/pseudonym.key" > "$tmp/out" 2>&1
check "pseudonym keygen refuses to overwrite" test $? -ne 0
"$BIN/liaison" keygen --from-broker-key "$tmp/keys/broker.key" > "$tmp/out" 2>&1
check "--from-broker-key alone is a usage error" test $? -ne 0
check "which says what it needs" grep -q "from-broker-key requires --pseudonym-key" "$tmp/out"
cat > "$tmp/agent.yaml" <<YAML
broker: tcp://127.0.0.1:9
broker_public_key_file: keys/broker.pub
secret_key_file: keys/agency-x.key
receipt_timeout_ms: 300
YAML
printf '{\n  "purpose": "x",\n  "payload_type": "CaseReferral",\n  "payload": {"subjekt": {}}\n}\n' > "$tmp/bad.json"
"$BIN/liaison" send --config "$tmp/agent.yaml" --to someone "$tmp/bad.json" > "$tmp/out" 2>&1
check "bad JSON exits 2" test $? -eq 2
check "bad JSON names the field and line" grep -q "bad.json:4.*subjekt" "$tmp/out"

echo '{"payload_type": "CaseClosure", "payload": {}}' > "$tmp/ok.json"
"$BIN/liaison" send --config "$tmp/agent.yaml" --to "kind:" "$tmp/ok.json" > "$tmp/out" 2>&1
check "bad address exits 2" test $? -eq 2
check "bad address is explained" grep -q "kind:KIND\[@REGION\]" "$tmp/out"

"$BIN/liaison" send --config "$tmp/agent.yaml" --to someone "$tmp/ok.json" > "$tmp/out" 2>&1
check "unreachable broker exits 1" test $? -eq 1
check "unreachable broker is explained" grep -q "no receipt from the broker" "$tmp/out"

sed -i 's/^secret_key_file.*/secret_key_fil: keys\/agency-x.key/' "$tmp/agent.yaml"
"$BIN/liaison" send --config "$tmp/agent.yaml" --to someone "$tmp/ok.json" > "$tmp/out" 2>&1
check "bad agent config exits 2" test $? -eq 2
check "bad agent config names key and line" grep -q "agent.yaml:3:1: unknown key 'secret_key_fil'" "$tmp/out"

# policy check: a rule that lost its leading '-' (its keys repeat those of the
# rule above) fails with file:line:column; warnings keep exit code 0.
SRC="$(cd "$(dirname "$0")/.." && pwd)"
cp -r "$SRC/policies" "$tmp/policies"
file="$tmp/policies/agencies/exit-mombasa.yaml"
"$BIN/liaison" policy check "$tmp/policies" > "$tmp/out" 2>&1
check "shipped policies pass check" test $? -eq 0
rules_before="$(grep -o '[0-9]* rules' "$tmp/out")"
line="$(grep -n '^  - id: withdraw-case' "$file" | cut -d: -f1)"
sed -i "${line}s/^  - id:/    id:/" "$file"
"$BIN/liaison" policy check "$tmp/policies" > "$tmp/out" 2>&1
check "a rule without its dash fails check" test $? -eq 1
check "naming the duplicate key with file:line:column" \
  grep -q "exit-mombasa.yaml:${line}:5: duplicate key 'release\[[0-9]*\].id': first at line" "$tmp/out"
cp "$SRC/policies/agencies/exit-mombasa.yaml" "$file"
cat >> "$file" <<'YAML'
  - id: second-block-rule
    messages: [CaseClosure]
    fields:
      others: drop
accept:
  - id: late
    messages: [CaseClosure]
    fields: {outcome: allow}
YAML
"$BIN/liaison" policy check "$tmp/policies" > "$tmp/out" 2>&1
check "a second accept: block fails check" test $? -eq 1
check "naming both accept: lines" grep -qE "exit-mombasa.yaml:[0-9]+:1: duplicate key 'accept': first at line [0-9]+, column 1" "$tmp/out"
cp "$SRC/policies/agencies/exit-mombasa.yaml" "$file"
sed -i "$((line + 3))a\\      '*': allow" "$file"
"$BIN/liaison" policy check "$tmp/policies" > "$tmp/out" 2>&1
check "a broad allow only warns (exit 0)" test $? -eq 0
check "with its line" grep -q "^warning: .*exit-mombasa.yaml:$((line + 4)): release rule 'withdraw-case': '\*: allow'" "$tmp/out"
check "and the rule count is unchanged (${rules_before})" grep -q "${rules_before}" "$tmp/out"
exit $fail
