#!/usr/bin/env bash
# Runs the blocks of docs/operations.md marked "<!-- checked: agency -->" and
# "<!-- checked: operator -->", in order and as written, against a real
# broker: operator blocks in a scratch folder standing in for /etc/liaison,
# agency blocks in another standing in for the agency's host. The test plays
# the courier (the agency's .pub to the operator, broker.pub to the agency)
# and puts the test broker's address in place of liaison.example.internal:7700.
set -euo pipefail
BIN="$(cd "$1" && pwd)"
SRC="$(cd "$2" && pwd)"
export PATH="$BIN:$PATH"

tmp="$(mktemp -d)"
broker_pid=""
cleanup() {
  if [ -n "$broker_pid" ]; then kill "$broker_pid" 2>/dev/null || true; wait "$broker_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

etc="$tmp/etc/liaison"
agency="$tmp/agency-host"
mkdir -p "$etc/keys" "$agency" "$tmp/state"
cp -r "$SRC/policies" "$etc/policies"
liaison keygen --out "$etc/keys" --name broker >/dev/null
liaison keygen --store-key "$etc/keys/store.key" >/dev/null
liaison keygen --pseudonym-key "$etc/keys/pseudonym.key" >/dev/null
liaison keygen --ledger-key "$etc/keys" >/dev/null
cat > "$etc/broker.yaml" <<YAML
listen: tcp://127.0.0.1:7700
secret_key_file: keys/broker.key
pseudonym_key_file: keys/pseudonym.key
policies_dir: policies
store:
  path: $tmp/state/liaison.db
  key_file: keys/store.key
ledger:
  path: $tmp/state/ledger.log
  signing_key_file: keys/ledger-signing.key
admin:
  listen: 127.0.0.1:0
  socket: $tmp/state/admin.sock
log:
  console: false
  file: $tmp/state/broker.log
YAML
liaison-broker --config "$etc/broker.yaml" --listen 'tcp://127.0.0.1:*' --ready-file "$tmp/ready" &
broker_pid=$!
for _ in $(seq 100); do [ -s "$tmp/ready" ] && break; sleep 0.1; done
endpoint="$(cat "$tmp/ready")"
[ -n "$endpoint" ] || { echo "FAIL: the broker did not start"; cat "$tmp/state/broker.log"; exit 1; }

# The checked blocks, in document order, as "ROLE<TAB>line" records.
awk '
  /^<!-- checked: (agency|operator) -->$/ { role = $3; want = 1; next }
  want && /^```sh$/ { inblock = 1; want = 0; n++; next }
  inblock && /^```$/ { inblock = 0; next }
  inblock { print n "\t" role "\t" $0 }
' "$SRC/docs/operations.md" > "$tmp/blocks"
blocks="$(cut -f1 "$tmp/blocks" | sort -un)"
[ "$(echo "$blocks" | wc -l)" -ge 4 ] || { echo "FAIL: fewer than 4 checked blocks in docs/operations.md"; exit 1; }

for n in $blocks; do
  role="$(awk -F'\t' -v n="$n" '$1 == n { print $2; exit }' "$tmp/blocks")"
  awk -F'\t' -v n="$n" '$1 == n { sub(/^[^\t]*\t[^\t]*\t/, ""); print }' "$tmp/blocks" |
    sed -e "s|cd /etc/liaison|cd $etc|" -e "s|tcp://liaison.example.internal:7700|$endpoint|" > "$tmp/block-$n.sh"
  if [ "$role" = operator ]; then
    cp "$agency/keys/probation-kilifi.pub" "$etc/" 2>/dev/null || true
    dir="$etc"
  else
    cp "$etc/keys/broker.pub" "$agency/"
    dir="$agency"
    # The operator's change must be live before the agency connects.
    if grep -q "liaison send" "$tmp/block-$n.sh"; then
      for _ in $(seq 100); do grep -q "event=reload_done agencies=9" "$tmp/state/broker.log" && break; sleep 0.1; done
      grep -q "event=reload_done agencies=9" "$tmp/state/broker.log" ||
        { echo "FAIL: the broker did not load the new agency"; cat "$tmp/state/broker.log"; exit 1; }
    fi
  fi
  echo "--- block $n ($role) ---"
  if ! (cd "$dir" && bash -euo pipefail "$tmp/block-$n.sh") > "$tmp/out-$n" 2>&1; then
    cat "$tmp/out-$n"
    echo "FAIL: block $n of docs/operations.md ($role) failed as written"
    exit 1
  fi
  tail -n 12 "$tmp/out-$n"
done

# The agency's first message went through both policies.
last="$(echo "$blocks" | tail -n1)"
grep -q '"code": "stored"' "$tmp/out-$last" || { echo "FAIL: the first message was not stored"; exit 1; }
grep -q 'supervision-progress' "$tmp/out-$last" || { echo "FAIL: the new release rule did not apply"; exit 1; }
echo "ok: the onboarding in docs/operations.md works as written"

# Rotating the broker's key (section 5), as written: the key moves, the
# config block (with this test's ports and a later end), a restart; then the
# agency is served with the old key on the old endpoint and with the new key
# on the new one.
extract() {  # extract MARKER LANGUAGE: the block after "<!-- checked: MARKER -->"
  awk -v marker="<!-- checked: $1 -->" -v fence="\`\`\`$2" '
    $0 == marker { want = 1; next }
    want && $0 == fence { inblock = 1; want = 0; next }
    inblock && /^```$/ { exit }
    inblock { print }' "$SRC/docs/operations.md"
}
# Status and queues (section 7), a backup and the restore drill (section
# 6), as written, against the running broker; /var/backups/liaison is a
# scratch folder.
for marker in status backup restore-drill; do
  extract "$marker" sh | sed -e "s|/etc/liaison|$etc|g" -e "s|/var/backups/liaison|$tmp/backups|g" > "$tmp/$marker.sh"
  [ -s "$tmp/$marker.sh" ] || { echo "FAIL: the $marker block is missing from docs/operations.md"; exit 1; }
  echo "--- $marker (operator) ---"
  if ! (cd "$etc" && bash -euo pipefail "$tmp/$marker.sh") > "$tmp/out-$marker" 2>&1; then
    cat "$tmp/out-$marker"; echo "FAIL: the $marker block of docs/operations.md failed as written"; exit 1
  fi
  tail -n 20 "$tmp/out-$marker"
done
grep -q "^role: *active" "$tmp/out-status" && grep -q "^queued messages: *[1-9]" "$tmp/out-status" &&
  grep -q "first-update\|CaseUpdate" "$tmp/out-status" ||
  { echo "FAIL: liaison status/queues did not show the queued message"; exit 1; }
grep -q "^backup in " "$tmp/out-backup" || { echo "FAIL: liaison backup did not report its backup"; exit 1; }
grep -q "ledger OK" "$tmp/out-restore-drill" && grep -q "^config ok" "$tmp/out-restore-drill" &&
  grep -q "^queued messages: *[1-9]" "$tmp/out-restore-drill" ||
  { echo "FAIL: the restore drill did not verify, check and show the restored queue"; exit 1; }
[ ! -e "$tmp/backups/drill" ] || { echo "FAIL: the drill left its folder behind"; exit 1; }
if grep -q "Reported on time" "$tmp"/out-status "$tmp"/out-restore-drill; then
  echo "FAIL: status or queues showed a message's contents"; exit 1
fi
echo "ok: status, queues, backup and the restore drill in docs/operations.md work as written"

extract rotation sh | sed -e "s|cd /etc/liaison|cd $etc|" > "$tmp/rotation.sh"
extract rotation-config yaml |
  sed -e "s|tcp://0.0.0.0:7700|$endpoint|" -e "s|tcp://0.0.0.0:7701|tcp://127.0.0.1:*|" \
      -e "s|/etc/liaison|$etc|" -e "s|until: .*|until: 2999-01-01T00:00:00Z|" > "$tmp/rotation.yaml"
[ -s "$tmp/rotation.sh" ] && grep -q previous_keys "$tmp/rotation.yaml" ||
  { echo "FAIL: the rotation blocks are missing from docs/operations.md"; exit 1; }
kill "$broker_pid"; wait "$broker_pid" || true; broker_pid=""
echo "--- rotation (operator) ---"
if ! (cd "$etc" && bash -euo pipefail "$tmp/rotation.sh") > "$tmp/out-rotation" 2>&1; then
  cat "$tmp/out-rotation"; echo "FAIL: the broker key rotation block failed as written"; exit 1
fi
grep -v -e '^listen:' -e '^secret_key_file:' "$etc/broker.yaml" > "$tmp/broker.yaml.new"
cat "$tmp/rotation.yaml" >> "$tmp/broker.yaml.new"
mv "$tmp/broker.yaml.new" "$etc/broker.yaml"
rm -f "$tmp/ready"
liaison-broker --config "$etc/broker.yaml" --ready-file "$tmp/ready" &
broker_pid=$!
for _ in $(seq 100); do [ -s "$tmp/ready" ] && break; sleep 0.1; done
new_endpoint="$(cat "$tmp/ready")"
[ -n "$new_endpoint" ] || { echo "FAIL: the broker did not start after the rotation"; cat "$tmp/state/broker.log"; exit 1; }
grep -q "event=listening_previous_key endpoint=$endpoint" "$tmp/state/broker.log" ||
  { echo "FAIL: the old key is not served on $endpoint"; cat "$tmp/state/broker.log"; exit 1; }
echo "--- rotation (agency, still on the old key) ---"
(cd "$agency" && liaison send --config agent.yaml --to reintegration-kwale first-update.json) > "$tmp/out-old" 2>&1 ||
  { cat "$tmp/out-old"; echo "FAIL: the old broker key was not served during the overlap"; exit 1; }
grep -q '"code": "stored"' "$tmp/out-old" || { cat "$tmp/out-old"; echo "FAIL: not stored on the old key"; exit 1; }
grep -q "event=auth_previous_broker_key agency=probation-kilifi" "$tmp/state/broker.log" ||
  { echo "FAIL: the broker did not name the agency still on the old key"; exit 1; }
echo "--- rotation (agency, moved to the new key) ---"
cp "$etc/keys/broker.pub" "$agency/broker.pub"
sed -i "s|^broker: .*|broker: $new_endpoint|" "$agency/agent.yaml"
(cd "$agency" && liaison send --config agent.yaml --to reintegration-kwale first-update.json) > "$tmp/out-new" 2>&1 ||
  { cat "$tmp/out-new"; echo "FAIL: the new broker key was not served"; exit 1; }
grep -q '"code": "stored"' "$tmp/out-new" || { cat "$tmp/out-new"; echo "FAIL: not stored on the new key"; exit 1; }
echo "ok: the broker key rotation in docs/operations.md works as written"
