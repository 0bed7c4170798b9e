"""Goldens are never written by the test that checks them.

``APO_LOCAL_WRITE_GOLDEN=1`` makes a golden check write what it got to ``<golden>.new.json`` beside the golden and
FAIL, naming the file: a person diffs it against the golden and moves it over when the change is intended. Under CI
(``CI`` set) the write is refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest


def check_golden(path: Path, got) -> None:
    """Assert ``got`` equals the JSON golden at ``path`` (or, asked to write, write the side file and fail)."""
    if os.environ.get("APO_LOCAL_WRITE_GOLDEN") == "1":
        if os.environ.get("CI"):
            pytest.fail("APO_LOCAL_WRITE_GOLDEN is refused under CI: goldens are compared there, never written")
        side = path.with_name(path.stem + ".new.json")
        side.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
        pytest.fail(f"wrote {side}: diff it against {path.name} and move it over if the change is intended")
    want = json.loads(path.read_text())
    if isinstance(want, dict) and isinstance(got, dict):
        assert sorted(got) == sorted(want)
        for key in want:
            assert got[key] == want[key], key
    assert got == want
