#!/usr/bin/env python3
"""Regenerates schema.tsv: the protobuf schema of every served kind, for `protobuf/mod.rs`.

Inputs:
- the `k8s-pb` crate's prost-generated sources (`#[prost(..., tag = "N")]`: field numbers,
  wire types, message types), e.g. `~/.cargo/registry/src/*/k8s-pb-0.9.0/src`;
- the `_definitions.json` of kubernetes-validate 1.32.0 (see ../openapi/gen_extensions.py for
  how to fetch it): upstream's exact JSON names, `required` lists and group-version-kinds;
- POINTERS below: the scalar fields that are pointers in Go (`*int32`, `*bool`, `*string`,
  ...), read from upstream's `types.go` (staging/src/k8s.io/api/<group>/v1/types.go).

    python3 gen_schema.py K8S_PB_SRC _definitions.json > schema.tsv

Rules, and why:
- A proto field's JSON name is the definition property that equals it ignoring case and
  underscores (prost snake-cases the proto names, which are the JSON names).
- A message field with no such property is embedded in Go with `json:",inline"` (Probe's
  `handler`, Volume's `volumeSource`, ...) when all of its message's properties belong to the
  parent; otherwise it is newer than v1.32 and left out (kubectl 1.32 never sends it).
- `req`: in the definition's `required` list, i.e. no `omitempty` in Go: Go's JSON writes it
  even when zero. `ptr`: a pointer in Go: present means set, zero included.
"""
import json
import os
import re
import sys

# Packages whose kinds are served (or are subresource kinds), as k8s-pb module paths. A group
# added here needs its pointer fields in pointers.txt.
PACKAGES = [
    "api/core/v1", "api/apps/v1", "api/batch/v1", "api/networking/v1", "api/discovery/v1",
    "api/coordination/v1", "api/storage/v1", "api/policy/v1", "api/autoscaling/v1",
    "api/authentication/v1",
]

# Messages with their own JSON form (see `Ty` in mod.rs).
LEAVES = {
    "io.k8s.apimachinery.pkg.apis.meta.v1.Time": "time",
    "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime": "microtime",
    "io.k8s.apimachinery.pkg.apis.meta.v1.Duration": "duration",
    "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1": "raw",
    "io.k8s.apimachinery.pkg.runtime.RawExtension": "raw",
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": "intstr",
    "io.k8s.apimachinery.pkg.api.resource.Quantity": "quantity",
    # `type ExtraValue []string`: a message {1: repeated string} on the wire, a list in JSON.
    "io.k8s.api.authentication.v1.ExtraValue": "strlist",
}

SCALARS = {"string": "str", "bool": "bool", "int32": "int", "int64": "int",
           "double": "double", 'bytes = "vec"': "bytes"}

# Scalar fields that are Go pointers (see pointers.txt).
POINTERS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pointers.txt")

FIELD_RE = re.compile(
    r'#\[prost\((?P<spec>[^\]]*?)tag = "(?P<tag>\d+)"\)\]\s*pub (?P<name>(r#)?\w+):(?P<ty>[^#]*?),\s*(?=///|#\[|$)',
    re.S)
STRUCT_RE = re.compile(r"\npub struct (\w+) \{(.*?)\n\}", re.S)


def definition_name(module):
    return "io.k8s." + module.replace("/", ".")


def resolve(module, path):
    """The definition a Rust type path names, from `module`."""
    path = re.sub(r"\s+", "", path)
    for wrap in ("::core::option::Option<", "::prost::alloc::boxed::Box<",
                 "::prost::alloc::vec::Vec<"):
        while path.startswith(wrap):
            path = path[len(wrap):-1]
    parts = path.split("::")
    base = module.split("/")
    while parts and parts[0] == "super":
        base.pop()
        parts.pop(0)
    return definition_name("/".join(base + parts[:-1])) + "." + parts[-1]


def parse(src):
    """{definition: [(tag, rust name, spec, resolved message or None, map value)]}"""
    out = {}
    for root, _, files in os.walk(src):
        if "mod.rs" not in files:
            continue
        module = os.path.relpath(root, src)
        text = open(os.path.join(root, "mod.rs")).read()
        for name, body in STRUCT_RE.findall(text):
            fields = []
            for m in FIELD_RE.finditer(body):
                spec, ty = m["spec"].strip().rstrip(","), m["ty"]
                msg = mapv = None
                if spec.startswith("btree_map"):
                    mapv = spec.split(",")[1].strip().strip('"')
                    if mapv == "message":
                        inner = re.sub(r"\s+", "", ty)
                        inner = inner[inner.index(",") + 1:].rstrip(">").rstrip(",")
                        msg = resolve(module, inner)
                elif spec.startswith("message"):
                    msg = resolve(module, ty)
                fields.append((int(m["tag"]), m["name"].removeprefix("r#"), spec, msg, mapv))
            out[definition_name(module) + "." + name] = fields
    return out


def norm(s):
    return s.replace("_", "").lower()


def main(src, defs_path):
    defs = json.load(open(defs_path))["$defs"]
    # prost camel-cases message names (ClientIPConfig is ClientIpConfig): back to upstream's.
    canon = {d.lower(): d for d in list(defs) + list(LEAVES)}
    protos = {canon.get(d.lower(), d): [(t, r, s, msg and canon.get(msg.lower(), msg), mv)
                                        for t, r, s, msg, mv in fs]
              for d, fs in parse(src).items()}
    pointers = set()
    for line in open(POINTERS_FILE):
        line = line.split("#")[0].strip()
        if line:
            d, f = line.rsplit(".", 1)
            pointers.add(("io.k8s." + d, f))
    todo = [d for d in protos if any(d.startswith(definition_name(p) + ".") for p in PACKAGES)
            and "x-kubernetes-group-version-kind" in defs.get(d, {})]
    kinds, seen, lines, used = [], set(), [], set()
    for d in sorted(todo):
        for gvk in defs[d]["x-kubernetes-group-version-kind"]:
            av = gvk["version"] if not gvk["group"] else f'{gvk["group"]}/{gvk["version"]}'
            kinds.append(f'kind\t{av}\t{gvk["kind"]}\t{d}')
    # Inlined messages upstream has no definition for (VolumeSource, ProbeHandler, ...) take
    # their names from the definition they are inlined into.
    borrowed = {}
    while todo:
        d = todo.pop()
        if d in seen or d in LEAVES:
            continue
        seen.add(d)
        own = defs.get(d) or defs[borrowed[d]]
        props = own.get("properties", {})
        by_norm = {norm(p): p for p in props}
        required = set(own.get("required", []))
        for tag, rust, spec, msg, mapv in protos[d]:
            flags = []
            if spec.startswith("btree_map"):
                ty = "map:" + (LEAVES.get(msg) or msg or SCALARS.get(mapv, "str"))
                if mapv == "bytes":
                    ty = "map:bytes"
            elif msg:
                ty = LEAVES.get(msg, msg)
            else:
                ty = SCALARS[spec.split(",")[0].strip()]
            if "repeated" in spec:
                flags.append("rep")
            json_name = by_norm.get(norm(rust))
            if json_name is None:
                if not msg or msg in LEAVES:
                    continue  # newer than v1.32
                if msg in defs:
                    sub = set(defs[msg].get("properties", {}))
                else:
                    sub = {by_norm.get(norm(f[1])) for f in protos[msg]} - {None}
                    borrowed[msg] = d
                if not sub or not sub <= set(props):
                    continue  # newer than v1.32
                json_name, flags = "", flags + ["inline"]
            if json_name in required:
                flags.append("req")
            if (d, json_name) in pointers:
                used.add((d, json_name))
                flags.append("ptr")
            if msg and msg not in LEAVES:
                todo.append(msg)
            lines.append(f"{d}\t{tag}\t{json_name}\t{ty}\t{','.join(flags)}")
    missing = pointers - used
    if missing:
        sys.exit(f"pointers.txt names fields that are not in the schema: {sorted(missing)}")
    print("# Generated by gen_schema.py from k8s-pb 0.9.0 and kubernetes-validate 1.32.0:")
    print("# kind: apiVersion, kind, definition; field: definition, number, JSON name ('' if")
    print("# inline), type, flags (rep, inline, req, ptr). Do not edit by hand.")
    print("\n".join(sorted(kinds)))
    print("\n".join(sorted(lines, key=lambda l: (l.split("\t")[0], int(l.split("\t")[1])))))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
