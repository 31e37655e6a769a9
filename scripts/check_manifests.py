#!/usr/bin/env python3
"""Checks of the install paths that need Python packages (run by tests/install.rs through the
testbed's venv; scripts/testbed.sh install puts the packages there).

  k8s FILE...             every object validates against the Kubernetes schemas (strict);
                          ClusterSyncs are skipped (see `cr`)
  cr CRD FILE...          every ClusterSync validates against the CRD's openAPIV3Schema,
                          rejecting unknown fields as `kubectl apply --validate=strict` does
  values CHART_DIR [JSON] values.yaml (or the JSON document given) validates against
                          values.schema.json
  lua SCRIPT              runs an Argo CD health script (Lua 5.1) on each object of the JSON
                          list read from stdin; prints a JSON list of {status, message}

Exit status 0 when everything passed, 1 with the failures on stderr.
"""
import copy
import json
import sys

import jsonschema
import yaml

K8S_VERSION = "1.33.0"


def docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def cmd_k8s(files):
    import kubernetes_validate

    failures = []
    checked = 0
    for path in files:
        for d in docs(path):
            if d.get("apiVersion", "").startswith("clustersync.io/"):
                continue
            what = f"{path}: {d.get('kind')}/{d.get('metadata', {}).get('name')}"
            try:
                kubernetes_validate.validate(d, K8S_VERSION, strict=True)
                checked += 1
            except kubernetes_validate.ValidationError as e:
                failures.append(f"{what}: {e.message} at {list(e.path)}")
            except kubernetes_validate.SchemaNotFoundError as e:
                failures.append(f"{what}: no schema: {e}")
    return failures, f"{checked} objects valid against Kubernetes {K8S_VERSION}"


def strict(schema):
    """OpenAPI v3 structural schema -> JSON Schema that rejects unknown fields."""
    s = copy.deepcopy(schema)

    def walk(n):
        if not isinstance(n, dict):
            return
        if n.get("x-kubernetes-int-or-string"):
            n.pop("type", None)
            n["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        if n.get("nullable"):
            t = n.get("type")
            if isinstance(t, str):
                n["type"] = [t, "null"]
        if "properties" in n and not n.get("x-kubernetes-preserve-unknown-fields"):
            n.setdefault("additionalProperties", False)
        for k, v in list(n.items()):
            if k in ("properties", "patternProperties", "definitions"):
                for sub in v.values():
                    walk(sub)
            elif k in ("items", "additionalProperties", "not"):
                walk(v)
            elif k in ("allOf", "anyOf", "oneOf"):
                for sub in v:
                    walk(sub)

    walk(s)
    return s


def cmd_cr(crd_path, files):
    crd = docs(crd_path)[0]
    version = crd["spec"]["versions"][0]
    schema = strict(version["schema"]["openAPIV3Schema"])
    # apiVersion, kind and metadata are the API server's; validate the rest.
    schema.setdefault("properties", {}).update(
        {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"}}
    )
    validator = jsonschema.Draft7Validator(schema)
    failures = []
    checked = 0
    for path in files:
        for d in docs(path):
            if d.get("kind") != "ClusterSync":
                continue
            checked += 1
            for e in validator.iter_errors(d):
                failures.append(f"{path}: {d['metadata']['name']}: {e.message} at {list(e.path)}")
    if checked == 0:
        failures.append("no ClusterSync found")
    return failures, f"{checked} ClusterSyncs valid against {crd_path}"


def cmd_values(chart, given=None):
    with open(f"{chart}/values.schema.json") as f:
        schema = json.load(f)
    if given is None:
        with open(f"{chart}/values.yaml") as f:
            values = yaml.safe_load(f) or {}
    else:
        values = json.loads(given)
    v = jsonschema.Draft7Validator(schema)
    failures = [f"{e.message} at {list(e.path)}" for e in v.iter_errors(values)]
    return failures, f"{chart}: values valid against values.schema.json"


def cmd_lua(script):
    from lupa import lua51

    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    with open(script) as f:
        source = f.read()
    # Argo CD exposes the object as the global `obj`.
    run = lua.eval(
        "function(o, source) obj = o; local f = assert(loadstring(source)); return f() end"
    )
    out = []
    for obj in json.load(sys.stdin):
        hs = run(to_lua(lua, obj), source)
        out.append({"status": hs["status"], "message": hs["message"]})
    print(json.dumps(out))
    return [], None


def to_lua(lua, v):
    if isinstance(v, dict):
        return lua.table_from({k: to_lua(lua, x) for k, x in v.items()})
    if isinstance(v, list):
        return lua.table_from([to_lua(lua, x) for x in v])
    return v


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = argv[1], argv[2:]
    if cmd == "k8s":
        failures, ok = cmd_k8s(args)
    elif cmd == "cr":
        failures, ok = cmd_cr(args[0], args[1:])
    elif cmd == "values":
        failures, ok = cmd_values(args[0], args[1] if len(args) > 1 else None)
    elif cmd == "lua":
        failures, ok = cmd_lua(args[0])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for f in failures:
        print(f, file=sys.stderr)
    if failures:
        return 1
    if ok:
        print(ok, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
