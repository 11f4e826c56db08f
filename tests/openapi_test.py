#!/usr/bin/python3
"""docs/openapi.yaml against the OpenAPI Initiative's own OpenAPI 3.0 JSON
Schema (Debian package openapi-specification), with Debian's
python3-jsonschema: the check a standard validator makes of the document's
structure. Exits 1 with each error's path in the document.

First it proves it can fail: a copy of the document with the fault that
once broke it (a flow mapping split at its commas, which gave the Problem
schema junk keys) must be refused.
"""
import copy
import json
import sys

import jsonschema
import yaml

SCHEMA = "/usr/share/openapi-specification/schemas/v3.0/schema.json"


class StringTimestamps(yaml.SafeLoader):
    """YAML 1.1 turns 2026-11-24 into a date; JSON (and OpenAPI) has none."""


StringTimestamps.yaml_implicit_resolvers = {
    k: [(tag, regexp) for tag, regexp in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def errors(validator, doc):
    return sorted(validator.iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path])


def main():
    if len(sys.argv) != 2:
        print("usage: openapi_test.py docs/openapi.yaml", file=sys.stderr)
        return 2
    try:
        with open(SCHEMA) as f:
            schema = json.load(f)
    except OSError as e:
        print(f"cannot read the OpenAPI 3.0 schema {SCHEMA}: {e} "
              "(scripts/install-deps installs the Debian package openapi-specification)", file=sys.stderr)
        return 1
    with open(sys.argv[1]) as f:
        doc = yaml.load(f, Loader=StringTimestamps)
    validator = jsonschema.Draft4Validator(schema)

    broken = copy.deepcopy(doc)
    schemas = broken.get("components", {}).get("schemas", {})
    if not schemas:
        print(f"{sys.argv[1]}: no components.schemas to check", file=sys.stderr)
        return 1
    first = next(iter(schemas.values()))
    first["unauthorized}"] = None  # what `{type: string, description: ..., unauthorized}` used to give
    if not errors(validator, broken):
        print("the validator accepted a schema with a junk key: it checks nothing", file=sys.stderr)
        return 1

    found = errors(validator, doc)
    for e in found[:40]:
        where = "/".join(str(p) for p in e.absolute_path) or "(document)"
        print(f"{sys.argv[1]}: {where}: {e.message[:300]}")
    if found:
        print(f"{len(found)} error(s): docs/openapi.yaml is not valid OpenAPI 3.0")
        return 1
    print(f"{sys.argv[1]}: valid OpenAPI 3.0 ({len(doc.get('paths', {}))} paths)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
