"""Third-party noise: what an engine prints while it starts never reaches stdout (unit test, no engine)."""

from __future__ import annotations

import os
import time

from apo_local.quiet import StartupTap


def test_startup_output_is_held_off_stdout_and_stderr(capfd):
    tap = StartupTap()
    os.write(1, b"WARNING from C++ on stdout\n")
    os.write(2, b"Loading checkpoint shards: 100%\n")
    time.sleep(0.2)  # the tap's thread reads the pipe
    held = tap.release(replay=False)
    print("the result")
    out, err = capfd.readouterr()
    assert out == "the result\n" and err == ""
    assert sorted(held) == ["Loading checkpoint shards: 100%", "WARNING from C++ on stdout"]
