"""Generates ``switchyard_client/models.py`` from the repository's JSON Schemas.

The command and event schemas share definitions (``Name``, ``Metadata``), so generating them
one by one would define those classes twice. This script merges both into one schema whose
``$defs`` hold every definition plus ``Command`` and ``Event``, refuses to merge two different
definitions under one name, and hands the result to datamodel-code-generator (pydantic v2).

Run it through ``./generate.sh`` (which picks the project's virtual environment), or as
``python tools/generate_models.py [--output FILE]``. The test ``tests/test_models.py`` runs it
into a temporary directory and fails when the committed file differs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PACKAGE_ROOT = HERE.parent
REPO_ROOT = PACKAGE_ROOT.parent.parent
SCHEMAS = REPO_ROOT / "schemas"
TARGET = PACKAGE_ROOT / "switchyard_client" / "models.py"

# (definition name, schema file): each file's root becomes a definition of the merged schema.
ROOTS = (("Command", "command.v1.json"), ("Event", "event.v1.json"))

HEADER = """\
# Generated from schemas/command.v1.json and schemas/event.v1.json by
# clients/python/generate.sh (datamodel-code-generator, pydantic v2). Do not edit by hand:
# change the schemas and run ./generate.sh; tests/test_models.py fails when this file drifts.\
"""

# The options are part of the output: changing them changes the committed file.
CODEGEN_OPTIONS = (
    "--input-file-type=jsonschema",
    "--output-model-type=pydantic_v2.BaseModel",
    "--target-python-version=3.10",
    "--use-annotated",
    "--field-constraints",
    "--use-standard-collections",
    "--use-union-operator",
    "--use-double-quotes",
    "--use-schema-description",
    "--use-field-description",
    "--collapse-root-models",
    "--use-type-alias",
    "--use-subclass-enum",
    "--disable-timestamp",
    "--formatters=builtin",
)


def merged_schema(schemas: Path = SCHEMAS) -> dict[str, Any]:
    """One schema holding the command and the event as ``$defs`` beside their shared types.

    ``$id`` and ``$schema`` are dropped from the embedded roots: a nested ``$id`` would move
    the base URI of their ``#/$defs/...`` references away from the merged document.
    """
    defs: dict[str, Any] = {}
    roots: dict[str, Any] = {}
    dialect = None
    for name, file in ROOTS:
        schema = json.loads((schemas / file).read_text(encoding="utf-8"))
        dialect = schema.get("$schema", dialect)
        for key, definition in schema.get("$defs", {}).items():
            if key in defs and defs[key] != definition:
                raise SystemExit(
                    f"{file}: $defs/{key} differs from the definition of the same name in "
                    "another schema; give one of them another name"
                )
            defs[key] = definition
        roots[name] = {k: v for k, v in schema.items() if k not in ("$defs", "$schema", "$id")}
    clash = set(roots) & set(defs)
    if clash:
        raise SystemExit(f"a schema defines {sorted(clash)}, the names of the generated roots")
    defs.update(roots)
    merged: dict[str, Any] = {
        "title": "Message",
        "description": "Anything Switchyard carries on its exchanges: a command or an event.",
        "$defs": defs,
        "anyOf": [{"$ref": f"#/$defs/{name}"} for name, _ in ROOTS],
    }
    if dialect:
        merged["$schema"] = dialect
    return merged


def generate(output: Path, schemas: Path = SCHEMAS) -> None:
    """Writes the models generated from ``schemas`` to ``output``."""
    with tempfile.TemporaryDirectory(prefix="switchyard-models-") as tmp:
        source = Path(tmp) / "switchyard-messages.v1.json"
        source.write_text(json.dumps(merged_schema(schemas), indent=2), encoding="utf-8")
        run = subprocess.run(
            [
                sys.executable,
                "-W",
                "ignore",
                "-m",
                "datamodel_code_generator",
                f"--input={source}",
                f"--output={output}",
                f"--custom-file-header={HEADER}",
                *CODEGEN_OPTIONS,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if run.returncode != 0:
            raise SystemExit(f"datamodel-codegen failed ({run.returncode}):\n{run.stderr}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=TARGET, help=f"default: {TARGET}")
    parser.add_argument("--schemas", type=Path, default=SCHEMAS, help=f"default: {SCHEMAS}")
    args = parser.parse_args()
    generate(args.output, args.schemas)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
