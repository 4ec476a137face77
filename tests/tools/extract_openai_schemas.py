"""Extracts the schemas the tests validate against from OpenAI's published OpenAPI document.

Usage: python3 tests/tools/extract_openai_schemas.py OPENAPI_YAML tests/fixtures/openai/schemas.json

Keeps the named roots and every schema they reference, as one JSON Schema 2020-12 document
(`$defs`), with the document's OpenAPI-3.0 `nullable: true` rewritten to `anyOf [.., null]` (a
2020-12 validator ignores `nullable`). Needs PyYAML; run once when the document changes, and
commit the output (tests never read outside the repository).
"""
import json
import sys

import yaml

ROOTS = [
    "Response",
    "ResponseStreamEvent",
    "ErrorResponse",
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "ListModelsResponse",
]

src, out = sys.argv[1], sys.argv[2]
schemas = yaml.safe_load(open(src))["components"]["schemas"]
keep = {}


def walk(node):
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            name = ref.rsplit("/", 1)[1]
            node["$ref"] = "#/$defs/" + name
            if name not in keep:
                keep[name] = None
                keep[name] = walk(json.loads(json.dumps(schemas[name])))
        for k, v in list(node.items()):
            if k != "$ref":
                node[k] = walk(v)
        if node.pop("nullable", False) is True:
            inner = {k: v for k, v in node.items() if not k.startswith("x-")}
            node.clear()
            node["anyOf"] = [inner, {"type": "null"}]
        return node
    if isinstance(node, list):
        return [walk(v) for v in node]
    return node


for root in ROOTS:
    walk({"$ref": "#/components/schemas/" + root})
doc = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$defs": dict(sorted(keep.items()))}
with open(out, "w") as f:
    json.dump(doc, f, indent=1, sort_keys=True)
    f.write("\n")
print(f"{len(keep)} schemas written to {out}")
