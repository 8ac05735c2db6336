#!/usr/bin/env bash
# Regenerates switchyard_client/models.py from schemas/command.v1.json and schemas/event.v1.json.
# Uses the virtual environment `./dev clients` creates (target/clients/venv), else $PYTHON or python3
# (which then needs `pip install -e 'clients/python[test]'` for datamodel-code-generator).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/../../target/clients/venv/bin/python"
if [ -n "${PYTHON:-}" ]; then py="$PYTHON"; elif [ -x "$venv" ]; then py="$venv"; else py=python3; fi
exec "$py" "$here/tools/generate_models.py" "$@"
