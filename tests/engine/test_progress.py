"""Long engine calls are never silent: a line when a call passes PROGRESS_AFTER_S, a heartbeat every HEARTBEAT_S
with the elapsed time and what the backend has counted so far (requests done, tokens out), a line at the end.
The counting hook is driven the way vLLM's ``LLM.generate`` drives its progress bar."""

from __future__ import annotations

import logging
import time

import apo_local.engine.roles as roles
from apo_local.engine.progress import CallProgress, ProgressBar, current


def drive_like_vllm(total: int, finished_tokens: list[int], pause: float) -> None:
    """What vLLM's _run_engine does with ``use_tqdm=<callable>``: build it, then per finished request read
    format_dict['elapsed'], set postfix with the speeds, update(n); close at the end."""
    hook = ProgressBar.drawn(False)
    assert list(hook(["p1", "p2"], desc="Rendering prompts")) == ["p1", "p2"]  # passed through, not counted
    bar = hook(total=total, desc="Processed prompts", dynamic_ncols=True, postfix="")
    total_in, total_out = 0, 0
    for tokens in finished_tokens:
        time.sleep(pause)
        total_in += 10
        in_spd = total_in / bar.format_dict["elapsed"]
        total_out += tokens
        out_spd = total_out / bar.format_dict["elapsed"]
        bar.postfix = f"est. speed input: {in_spd:.2f} toks/s, output: {out_spd:.2f} toks/s"
        bar.update(1)
    bar.close()


class SlowGenerator:
    model_id, max_model_len, hits = "slow", 2048, 0

    def generate(self, requests):
        from apo_local.engine.protocol import Generation

        drive_like_vllm(len(requests), [100, 250], pause=0.15)
        time.sleep(0.3)
        return [Generation(("x",), 1, 1) for _ in requests]


def test_a_long_call_gets_heartbeats_with_requests_and_tokens(monkeypatch, caplog):
    from apo_local.engine.protocol import GenerationRequest

    monkeypatch.setattr(roles, "PROGRESS_AFTER_S", 0.05)
    monkeypatch.setattr(roles, "HEARTBEAT_S", 0.2)
    trace = roles.Trace()
    trace.at("gradients", 2)
    eng = roles.RoleEngine(SlowGenerator(), "optimizer", trace)
    with caplog.at_level(logging.INFO, logger="apo_local"):
        eng.generate([GenerationRequest("a"), GenerationRequest("b"), GenerationRequest("c")])
    lines = [r.getMessage() for r in caplog.records]
    label = "optimizer: 3 generation requests (gradients, round 2)"
    assert lines[0] == f"{label} ..."
    beats = [line for line in lines if "still running" in line]
    assert beats and all(line.startswith(f"{label}: still running, ") for line in beats)
    assert any(line.endswith("(2 of 3 requests done, 350 tokens out)") for line in beats), beats
    assert lines[-1].startswith(f"{label} done in ")
    assert current() is None  # the call's counter is gone with the call


def test_a_short_call_says_nothing(caplog):
    class Quick:
        model_id, max_model_len, hits = "quick", 2048, 0

        def score_choices(self, prompts, choices):
            return []

    with caplog.at_level(logging.INFO, logger="apo_local"):
        roles.RoleEngine(Quick(), "target", roles.Trace()).score_choices(["a"], ["Yes", "No"])
        time.sleep(0.1)
    assert not [r for r in caplog.records if "1 scoring request" in r.getMessage()]


def test_the_counter_describes_only_what_it_knows():
    p = CallProgress()
    assert p.describe() == ""
    p.add(total=4)
    p.add(done=1)
    assert p.describe() == "1 of 4 requests done"
    p.add(out_tokens=1234)
    assert p.describe() == "1 of 4 requests done, 1,234 tokens out"
