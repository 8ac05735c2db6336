"""The committed models are what the schemas generate, and they read the wire format."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from switchyard_client import Event, Status, new_command
from switchyard_client.commands import command_body
from switchyard_client.models import Command

ROOT = Path(__file__).resolve().parents[1]


def test_committed_models_match_the_schemas(tmp_path: Path) -> None:
    fresh = tmp_path / "models.py"
    run = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "generate_models.py"), "--output", str(fresh)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    committed = (ROOT / "switchyard_client" / "models.py").read_text(encoding="utf-8")
    assert fresh.read_text(encoding="utf-8") == committed, (
        "switchyard_client/models.py no longer matches schemas/command.v1.json and "
        "schemas/event.v1.json: run clients/python/generate.sh and commit the result"
    )


def test_a_command_survives_the_wire_unchanged() -> None:
    command = new_command("payment", "sandbox", "charge", {"amount": 500}, metadata={"order": "42"})
    again = Command.model_validate_json(command_body(command))
    assert again == command
    assert again.idempotency_key == str(command.id), "the id is the key when none is given"


def test_an_event_as_the_fleet_publishes_it_is_read() -> None:
    event = Event.model_validate(
        {
            "event_id": "7b0e7bd4-3c0a-5e43-9d2e-9f1c2c1d7a11",
            "command_id": "0193f0c1-0000-7000-8000-000000000001",
            "seq": 6,
            "status": "failed",
            "kind": "payment",
            "provider": "sandbox",
            "operation": "charge",
            "attempt": 1,
            "run": 0,
            "occurred_at": "2026-11-25T10:00:00.160Z",
            "error": {
                "class": "permanent",
                "code": "http_402",
                "message": "declined",
                "http_status": 402,
            },
            "metadata": {},
            "some_future_member": True,
        }
    )
    assert event.status is Status.failed
    assert event.error is not None and event.error.class_.value == "permanent"
