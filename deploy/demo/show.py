#!/usr/bin/env python3
"""Pretty output for the demo: receipts, and what each agency received."""
import json
import os
import sys


def receipt(sender, name, rc, receipt_path, error_path):
    print(f"\n{sender} sends {name}  (exit code {rc})")
    try:
        with open(receipt_path) as f:
            r = json.load(f)
    except (OSError, ValueError):
        with open(error_path) as f:
            print("  error: " + f.read().strip())
        return
    code = r.get("code", "ok")
    if code != "ok":
        print(f"  rejected: {code}: {r.get('detail', '')}")
    for rec in r.get("recipients", []):
        reason = f" ({rec['reason']})" if rec.get("reason") else ""
        rules = f"  rules: {', '.join(rec['rules'])}" if rec.get("rules") else ""
        glass = "  BREAK-GLASS" if rec.get("break_glass") else ""
        print(f"  -> {rec['recipient']:<24} {rec.get('code', 'ok')}{reason}{rules}{glass}")
        for kind in ("transformed", "dropped"):
            if rec.get(kind):
                print(f"       {kind}: {', '.join(rec[kind])}")
    if r.get("policy_version"):
        print(f"  (policy version {r['policy_version']})")


def fields(obj, prefix=""):
    out = []
    for key, value in obj.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out += fields(value, path + ".")
        else:
            out.append(path)
    return out


def inbox(root):
    for agency in sorted(os.listdir(root)):
        folder = os.path.join(root, agency)
        files = sorted(os.listdir(folder))
        print(f"\n{agency}: {len(files)} message(s)")
        for name in files:
            with open(os.path.join(folder, name)) as f:
                m = json.load(f)
            payload = m.get("payload", {})
            print(f"  {m.get('payload_type')} from {m.get('from')} case {m.get('case_ref', '-')}"
                  f" purpose {m.get('purpose', '-')}")
            print("    fields: " + ", ".join(fields(payload)))
            subject = payload.get("subject", {})
            shown = {k: subject[k] for k in ("date_of_birth", "national_id") if k in subject}
            if shown:
                print(f"    e.g. {shown}")


if __name__ == "__main__":
    if sys.argv[1] == "receipt":
        receipt(*sys.argv[2:7])
    else:
        inbox(sys.argv[2])
