#!/usr/bin/env python3
"""The typescript-fetch client generated from openapi/openapi.yaml builds and reads binary answers as blobs.

Generates the client with openapi-generator-cli (typescript-fetch), fails on any generator warning
but the one about OpenAPI 3.1 support being in beta, compiles it with tsc in strict mode
(typescript from tests/sdk/package.json, installed with `npm ci`), and checks every operation
whose success answers are binary (PNG, safetensors, exports, binary tensors) returns a
`BlobApiResponse` and never calls `.json()` on them, while every JSON-only one parses JSON.

    python3 tests/sdk/typescript_check.py [--workdir DIR]
"""

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "tests" / "sdk"
SPEC_PATH = ROOT / "openapi" / "openapi.yaml"
# The generator logs "Failed to get the schema name: null" for each `oneOf` with a primitive
# alternative (a learning rate is a number or a schedule object); the union it generates is right,
# which `UNIONS` below checks.
ALLOWED_WARNINGS = ("OpenAPI 3.1 support is still in beta", "Failed to get the schema name: null")
UNIONS = {
    "LearningRateSpec": "export type LearningRateSpec = ScheduleSpec | number;",
    "OptimizerSpec": "export type OptimizerSpec = OptimizerConfig | OptimizerName;",
}


def fail(message):
    sys.exit(f"typescript_check: {message}")


def run(cmd, cwd=None):
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if res.returncode != 0:
        fail(f"{' '.join(map(str, cmd))} failed ({res.returncode}):\n{res.stdout[-6000:]}\n{res.stderr[-6000:]}")
    return res.stdout + res.stderr


def camel(op_id):
    head, *rest = op_id.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", help="where the client goes (default: a temporary directory)")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="fitd-ts-"))
    out = workdir / "typescript-fetch"

    # skipFormModel=false: the multipart bodies' models are generated too (the API classes import them).
    log = run(["openapi-generator-cli", "generate", "-g", "typescript-fetch", "-i", str(SPEC_PATH),
               "-o", str(out), "--global-property", "skipFormModel=false"])
    warnings = [line for line in log.splitlines()
                if ("WARN" in line or "ERROR" in line) and not any(a in line for a in ALLOWED_WARNINGS)]
    if warnings:
        fail("the generator warned about the spec:\n" + "\n".join(warnings))

    run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=HERE)
    run([str(HERE / "node_modules" / ".bin" / "tsc"), "--noEmit", "--strict", "--target", "es2020",
         "--module", "es2020", "--moduleResolution", "node", "--lib", "es2020,dom", str(out / "index.ts")])

    for model, union in UNIONS.items():
        source = (out / "models" / f"{model}.ts").read_text()
        if union not in source:
            fail(f"models/{model}.ts lacks `{union}`")

    spec = yaml.safe_load(SPEC_PATH.read_text())
    schemas = spec["components"]["schemas"]

    def binary(media):
        schema = media.get("schema", {})
        if "$ref" in schema:
            schema = schemas[schema["$ref"].rsplit("/", 1)[1]]
        return schema.get("type") == "string" and schema.get("format") == "binary"

    sources = "\n".join(p.read_text() for p in sorted((out / "apis").glob("*.ts")))
    checked = {"blob": 0, "json": 0}
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method not in ("get", "put", "post", "delete", "patch"):
                continue
            name = camel(op["operationId"])
            found = re.search(rf"async {name}Raw\(.*?\n    }}\n", sources, re.S)
            if not found:
                fail(f"no {name}Raw in the generated client ({method.upper()} {path})")
            code = found.group(0)
            ok = [r.get("content") or {} for s, r in op["responses"].items() if s.startswith("2")]
            media = [m for content in ok for m in content.items()]
            if media and all(binary(m) for _, m in media):
                if "BlobApiResponse" not in code or ".json()" in code or "JSONApiResponse" in code:
                    fail(f"{method.upper()} {path} answers binary {[c for c, _ in media]}, "
                         f"but {name}Raw does not read a blob:\n{code}")
                checked["blob"] += 1
            elif media and all(c.endswith("json") for c, _ in media):
                if "JSONApiResponse" not in code:
                    fail(f"{method.upper()} {path} answers JSON, but {name}Raw does not parse it:\n{code}")
                checked["json"] += 1
    if checked["blob"] < 3:
        fail(f"only {checked['blob']} binary answers found in the spec")
    print(f"typescript-fetch client compiles with tsc --strict; {checked['blob']} binary answers read as blobs, "
          f"{checked['json']} JSON answers parsed")


if __name__ == "__main__":
    main()
