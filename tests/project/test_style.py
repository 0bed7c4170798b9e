"""One style for the whole repository: ``ruff check`` (pyflakes, pycodestyle, import order, bugbear, pyupgrade) and
``ruff format --check``, configured in pyproject.toml. ``ruff format`` and ``ruff check --fix`` apply them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_the_repository_passes_ruff(command):
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", *command, "."], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
