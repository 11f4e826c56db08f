#!/usr/bin/env python3
"""docs/protocol.md's Python, run as an integrator would run it.

Against a real broker (CURVE on, loopback, the example policies with two
agencies registered) and with flatc's Python output for schemas/envelope.fbs
and schemas/control.fbs, this:
  - evaluates section 2's key fingerprint expression and compares it with the
    fingerprint the broker logs for its own key;
  - runs section 10's client (the first ```python block) unchanged, and uses
    it as its closing comments show: a sender gets a receipt that says
    `stored`, the recipient's receiver gets the message and acks it, and the
    sending agency's receiver gets the `delivered` NOTICE;
  - runs the second ```python block (reading a union payload) on a delivered
    CaseReferral;
  - checks that every method the comments name (env.From_(), r.Recipients(i),
    ...) exists in flatc's output.

Usage: protocol_examples_test.py BIN_DIR SOURCE_DIR. Needs python3-zmq,
python3-flatbuffers and flatc (Debian flatbuffers-compiler).
"""
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

BIN, SRC = (os.path.abspath(p) for p in sys.argv[1:3])
DOC = os.path.join(SRC, "docs", "protocol.md")
SENDER, RECIPIENT = "exit-mombasa", "youth-welfare-mombasa"
failures = []


def check(what, ok, detail=""):
    print(("ok: " if ok else "FAIL: ") + what + ("" if ok else f" ({detail})"))
    if not ok:
        failures.append(what)


def run(*argv, **kw):
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, **kw)
    if done.returncode != 0:
        sys.exit(f"FAIL: {' '.join(argv)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return done.stdout


def wait_for(what, condition, seconds=10.0, step=None):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if step:
            step()
        if condition():
            return True
        if not step:
            time.sleep(0.05)
    check(what, False, f"not within {seconds:.0f} s")
    return False


def start_broker(tmp):
    """The example policies with SENDER and RECIPIENT registered; returns (process, endpoint, log path)."""
    etc = os.path.join(tmp, "etc")
    keys = os.path.join(etc, "keys")
    os.makedirs(keys)
    shutil.copytree(os.path.join(SRC, "policies"), os.path.join(etc, "policies"))
    liaison = os.path.join(BIN, "liaison")
    for name in ("broker", SENDER, RECIPIENT):
        run(liaison, "keygen", "--out", keys, "--name", name)
    run(liaison, "keygen", "--store-key", os.path.join(keys, "store.key"))
    run(liaison, "keygen", "--pseudonym-key", os.path.join(keys, "pseudonym.key"))
    run(liaison, "keygen", "--ledger-key", keys)
    for name in (SENDER, RECIPIENT):
        path = os.path.join(etc, "policies", "agencies", name + ".yaml")
        text = open(path).read()
        public = read_z85(os.path.join(keys, name + ".pub")).decode()
        text, n = re.subn(r'^public_key: ""', f'public_key: "{public}"', text, flags=re.M)
        if n != 1:
            sys.exit(f"FAIL: {path}: no empty public_key line to fill in")
        open(path, "w").write(text)
    log = os.path.join(tmp, "broker.log")
    with open(os.path.join(etc, "broker.yaml"), "w") as f:
        f.write(f"""listen: tcp://127.0.0.1:7700
secret_key_file: keys/broker.key
pseudonym_key_file: keys/pseudonym.key
policies_dir: policies
store:
  path: {tmp}/liaison.db
  key_file: keys/store.key
ledger:
  path: {tmp}/ledger.log
  signing_key_file: keys/ledger-signing.key
admin:
  listen: 127.0.0.1:0
log:
  console: false
  file: {log}
""")
    ready = os.path.join(tmp, "ready")
    broker = subprocess.Popen([os.path.join(BIN, "liaison-broker"), "--config", os.path.join(etc, "broker.yaml"),
                               "--listen", "tcp://127.0.0.1:*", "--ready-file", ready],
                              stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "broker.stderr"), "w"))
    deadline = time.monotonic() + 15
    while not (os.path.exists(ready) and open(ready).read().strip()):
        if broker.poll() is not None or time.monotonic() > deadline:
            broker.kill()
            sys.exit("FAIL: the broker did not start:\n" + open(os.path.join(tmp, "broker.stderr")).read()
                     + (open(log).read() if os.path.exists(log) else ""))
        time.sleep(0.05)
    return broker, open(ready).read().strip(), log, keys


def read_z85(path):
    for line in open(path, "rb"):
        line = line.strip()
        if line and not line.startswith(b"#"):
            return line
    sys.exit(f"FAIL: {path} holds no key")


def python_blocks(text):
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def main():
    doc = open(DOC).read()
    blocks = python_blocks(doc)
    if len(blocks) < 2:
        sys.exit(f"FAIL: {DOC}: expected the client and the union example as ```python blocks, found {len(blocks)}")
    tmp = tempfile.mkdtemp(prefix="liaison-protocol-")
    broker = None
    try:
        gen = os.path.join(tmp, "gen")
        run(shutil.which("flatc") or "flatc", "--python", "-o", gen,
            os.path.join(SRC, "schemas", "envelope.fbs"), os.path.join(SRC, "schemas", "control.fbs"))
        sys.path.insert(0, gen)
        broker, endpoint, log, keys = start_broker(tmp)

        # Section 2: the fingerprint expression, on the broker's public key.
        expr = re.search(r"`(hashlib\.sha256\([^`]*\)\.hexdigest\(\)\[:16\])`", doc)
        check("section 2 shows the fingerprint expression", expr is not None)
        logged = re.search(r"broker_key_fingerprint=([0-9a-f]{16})", open(log).read())
        imports = re.search(r"`(import hashlib[\w., ]*)`", doc)
        check("section 2 shows what the expression imports", imports is not None)
        if expr and imports and logged:
            scope = {"pub": read_z85(os.path.join(keys, "broker.pub"))}
            exec(imports.group(1), scope)
            mine = eval(expr.group(1), scope)
            check("section 2's fingerprint of broker.pub is the one the broker logs", mine == logged.group(1),
                  f"{mine} != {logged.group(1)}")

        # Section 10's client, exactly as printed.
        ns = {"__name__": "protocol_md_client"}
        exec(compile(blocks[0], f"{DOC} (python block 1)", "exec"), ns)
        Client, Role, Code = ns["Client"], ns["Role"], ns["Code"]
        read_key = ns["read_key"]
        broker_pub = read_key(os.path.join(keys, "broker.pub"))
        recipient = Client(endpoint, broker_pub, read_key(os.path.join(keys, RECIPIENT + ".key")), Role.receiver)
        sender_inbox = Client(endpoint, broker_pub, read_key(os.path.join(keys, SENDER + ".key")), Role.receiver)
        for c, who in ((recipient, RECIPIENT), (sender_inbox, SENDER + " (receiver)")):
            wait_for(f"{who} is welcomed", lambda c=c: getattr(c, "agency", None), step=lambda c=c: c.pump(50))

        sender = Client(endpoint, broker_pub, read_key(os.path.join(keys, SENDER + ".key")), Role.sender)
        mid = ns["new_ulid"]()
        r = sender.send(mid, ns["closure_envelope"](mid, RECIPIENT, "EXIT-MSA-2026-0042"))
        check("the receipt is ok", r.Code() == Code.ok, f"code {r.Code()}: {r.Detail()}")
        results = {r.Recipients(i).Recipient().decode(): r.Recipients(i).Code() for i in range(r.RecipientsLength())}
        check(f"the closure is stored for {RECIPIENT}", results.get(RECIPIENT) == Code.stored, str(results))

        # A referral too (sent with the CLI), for the union example.
        with open(os.path.join(tmp, "agent.yaml"), "w") as f:
            f.write(f"broker: {endpoint}\nbroker_public_key_file: {keys}/broker.pub\n"
                    f"secret_key_file: {keys}/{SENDER}.key\n")
        run(os.path.join(BIN, "liaison"), "send", "--config", os.path.join(tmp, "agent.yaml"), "--to", RECIPIENT,
            os.path.join(SRC, "policies", "tests", "messages", "01-exit-to-youth-welfare.json"))

        # The receiver, as the comments show it; the union example on each message.
        received = {}
        def take():
            recipient.pump(200)
            while recipient.inbox:
                env = recipient.inbox.pop(0)
                union = {"env": env}
                exec(compile(blocks[1], f"{DOC} (python block 2)", "exec"), ns | union, union)
                received[env.PayloadType()] = (env.From_().decode(), union.get("ref"))
                recipient.sock.send_multipart([b"ACK", ns["ack_body"](env.Id().decode())])
        wait_for("the closure and the referral are delivered", lambda: len(received) == 2, step=take)
        Payload = ns["Payload"]
        if Payload.CaseClosure in received:
            check("the closure's From_() is the sender", received[Payload.CaseClosure][0] == SENDER,
                  received[Payload.CaseClosure][0])
        if Payload.CaseReferral in received:
            ref = received[Payload.CaseReferral][1]
            check("the union example reads the CaseReferral", ref is not None and ref.Subject() is not None)

        # The sending agency's receiver connection learns of the delivery.
        delivered = []
        def notices():
            sender_inbox.pump(200)
            while sender_inbox.notices:
                n = sender_inbox.notices.pop(0)
                if n.MessageId().decode() == mid and n.Recipients(0).Code() == Code.delivered:
                    delivered.append(n.Recipients(0).Recipient().decode())
        if wait_for("a delivered NOTICE for the closure reaches the sender's receiver", lambda: delivered,
                    step=notices):
            check("the NOTICE names the recipient", delivered[0] == RECIPIENT, delivered[0])

        # Every generated method the comments of block 1 name exists.
        names = set()
        for module in glob.glob(os.path.join(gen, "liaison", "wire", "*.py")):
            text = open(module).read()
            names |= set(re.findall(r"^    def (\w+)\(self", text, flags=re.M))
        comments = "\n".join(line for line in blocks[0].splitlines() if line.lstrip().startswith("#"))
        called = set(re.findall(r"\b(?:env|r|e|n|c|w)\.([A-Z]\w*)\(", comments))
        check("the comments name generated methods", len(called) >= 8, str(sorted(called)))
        missing = sorted(called - names)
        check("every method the comments name is in flatc's Python output", not missing, ", ".join(missing))
    finally:
        if broker is not None:
            broker.terminate()
            try:
                broker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                broker.kill()
                broker.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        sys.exit(f"FAIL: {len(failures)} check(s) failed")
    print("ok: docs/protocol.md's Python runs as written")


if __name__ == "__main__":
    main()
