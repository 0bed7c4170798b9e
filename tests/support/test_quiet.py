"""Third-party noise: what an engine prints while it starts never reaches stdout (unit test, no engine)."""

from __future__ import annotations

import os
import time

from apo_local.support.quiet import StartupTap


def test_startup_output_is_held_off_stdout_and_stderr(capfd):
    tap = StartupTap()
    os.write(1, b"WARNING from C++ on stdout\n")
    os.write(2, b"Loading checkpoint shards: 100%\n")
    deadline = time.monotonic() + 30
    while len(tap.lines) < 2 and time.monotonic() < deadline:  # until the tap's thread has read both lines
        time.sleep(0.01)
    held = tap.release(replay=False)
    print("the result")
    out, err = capfd.readouterr()
    assert out == "the result\n" and err == ""
    assert sorted(held) == ["Loading checkpoint shards: 100%", "WARNING from C++ on stdout"]


def test_a_cut_example_is_one_line_naming_the_row_and_the_real_limit(caplog):
    """Unit test (a word-counting stand-in tokenizer): one line per cut row, every cut in the trace."""
    import logging

    from apo_local.engine import Trace
    from apo_local.scoring import limit_length
    from apo_local.tasks import Example, load_task

    class Words:
        max_model_len = 60

        def count_tokens(self, prompts):
            return [len(p.split()) for p in prompts]

    task = load_task("liar")
    trace = Trace()
    limit_length(task, Words(), 16, trace)
    long = Example("test-7", "Statement: " + " ".join(f"w{i}" for i in range(200)), "No")
    with caplog.at_level(logging.INFO, logger="apo_local"):
        for instruction in ("Is it a lie?", "Is it true?"):
            assert len(task.render(instruction, long).split()) <= 60 - 16
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and trace.faults == {"example_truncated": 2}
    assert lines[0].startswith("example test-7: input cut in the middle, prompt ")
    assert lines[0].endswith("the target model's context is 60 tokens (max_model_len), 16 kept for the answer")
