"""Faults inside a run, on the real engine: kill -9 at several points then exact resume, the run
directory lock, a useless optimizer, over-long candidates and examples, an engine that cannot start.

Cost control (CI has 2 cores): one kill/resume chain of four subprocesses (each starts an engine),
one engine-start failure subprocess; everything else runs in-process on the shared ``engine``.
Kill -9 points: during round 1's expansion, during round 1's selection, right after the checkpoint
that ends round 2's expansion, and (separately, no engine) in the middle of a checkpoint write; then
Ctrl-C during round 2's selection.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from apo_local.run.config import build_config
from apo_local.run.optimize import optimize, resume
from apo_local.run.run_dir import RunDir, atomic_write
from tests.conftest import TINY

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "apo_local.commands.cli"]


def _comparable(results: dict) -> dict:
    return {k: v for k, v in results.items() if k != "time"}


@pytest.fixture(scope="module")
def reference(tiny_run):
    """The uninterrupted run's results (the session's TINY run, computed with a fresh result cache)."""
    return json.loads((tiny_run[0] / "results.json").read_text())


# -- kill -9 at several points; resume reaches the same results ---------------------------------


def _checkpoint(run: Path) -> tuple[int, str] | None:
    try:
        c = json.loads((run / "checkpoint.json").read_text())  # atomic: never a half file
    except FileNotFoundError:
        return None
    return c["round"], c["phase"]


def _trace(run: Path) -> list[dict]:
    try:
        lines = (run / "trace.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # the line being written right now
            pass
    return out


def _flocked(path: Path) -> bool:
    """Whether some process holds a flock on ``path`` (Linux /proc/locks), without touching the lock."""
    try:
        inode = os.stat(path).st_ino
        return any(
            line.split()[1] == "FLOCK" and line.split()[5].endswith(f":{inode}")
            for line in Path("/proc/locks").read_text().splitlines()
            if len(line.split()) > 5
        )
    except FileNotFoundError:
        return False


class _Run(subprocess.Popen):
    """A CLI subprocess whose stderr lines are collected as they come (a thread drains the pipe)."""

    def __init__(self, args: list[str]):
        # a progress line when every engine call starts (threshold 0): the kill points below wait for the event "a
        # batch of this phase has started", whatever the machine's speed
        super().__init__(
            [*CLI, *args],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env={**os.environ, "APO_LOCAL_PROGRESS_AFTER_S": "0"},
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        for line in iter(self.stderr.readline, ""):
            self.lines.append(line)

    def says(self, text: str) -> bool:
        return any(text in line for line in list(self.lines))

    def tail(self) -> str:
        self._reader.join(timeout=10)
        return "".join(self.lines)[-2000:]


def _start(args: list[str]) -> _Run:
    return _Run(args)


def _kill_when(proc: subprocess.Popen, ready, delay: float = 0.0, timeout: float = 600) -> bool:
    """SIGKILL the process group (engine-core and workers included) once ``ready()``; False if it ended first."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if ready():
            time.sleep(delay)
            if proc.poll() is not None:
                break
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
            return True
        time.sleep(0.05)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        raise AssertionError("kill point never reached")
    return False


def test_kill9_at_several_points_then_resume_is_exact(reference, engine, tmp_path):
    run = tmp_path / "run"
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(yaml.safe_dump({**TINY, "cache": str(tmp_path / "cache.sqlite")}))
    log = []

    # 1. fresh run, killed during round 1's expansion (the optimizer is writing gradients/edits)
    p = _start(["optimize", "--config", str(cfg_file), "--out", str(run)])
    killed = _kill_when(p, lambda: any(t.get("role") == "optimizer" for t in _trace(run)))
    assert killed, p.tail()
    log.append(("expansion", _checkpoint(run)))
    assert _checkpoint(run) in (None, (1, "expanded")) and not (run / "results.json").exists()

    # 2. resumed, killed during round 1's selection (bandit pulls on the target); meanwhile a second
    #    process pointed at the same run directory is refused by the lock, before any engine starts
    p = _start(["optimize", "--resume", str(run)])
    deadline = time.time() + 120
    while not _flocked(run / ".lock") and time.time() < deadline and p.poll() is None:
        time.sleep(0.1)
    assert _flocked(run / ".lock"), "the resumed run never took the lock"
    for args in (
        ["optimize", "--resume", str(run)],
        ["optimize", "--config", str(cfg_file), "--out", str(run), "--overwrite"],
    ):
        second = subprocess.run([*CLI, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert (
            second.returncode == 2 and second.stderr.strip() == f"error: {run} is in use by another apo-local process"
        ), second.stderr
    assert (run / "config.yaml").is_file(), "--overwrite must not wipe a live run"
    # a select batch is written to the trace when it ends, and round 1 may have one batch only (all arms on
    # one shared sample): the progress line of a running batch is the reliable "in the middle of selection"
    killed = _kill_when(p, lambda: p.says("(select, round 1) ..."))
    assert killed, p.tail()
    assert _checkpoint(run) == (1, "expanded"), p.tail()
    log.append(("selection", _checkpoint(run)))

    # 3. resumed, killed the moment a checkpoint write lands (end of round 2's expansion)
    p = _start(["optimize", "--resume", str(run)])
    assert _kill_when(p, lambda: _checkpoint(run) == (2, "expanded")), p.tail()
    log.append(("after checkpoint", _checkpoint(run)))
    assert not (run / "results.json").exists()

    # 4. resumed, Ctrl-C (SIGINT to the whole process group, as a terminal sends it) during round 2's
    #    selection: exit code 130 and a hint how to resume
    p = _start(["optimize", "--resume", str(run)])
    deadline = time.time() + 600
    while time.time() < deadline and p.poll() is None and not p.says("(select, round 2) ..."):
        time.sleep(0.05)
    assert p.poll() is None, p.tail()
    os.killpg(p.pid, signal.SIGINT)
    try:
        p.wait(timeout=180)
        stderr = p.tail()
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=60)
        raise AssertionError("Ctrl-C did not stop the run within 180 s") from None
    assert p.returncode == 130 and f"interrupted; continue with: apo-local optimize --resume {run}" in stderr, stderr[
        -2000:
    ]
    log.append(("ctrl-c", _checkpoint(run)))
    # interrupted in round 2's selection, or just after its checkpoint (the final evaluation): never done
    assert _checkpoint(run) in ((2, "expanded"), (2, "selected"), (2, "final")) and not (run / "results.json").exists()

    # 5. finish in this process, on the shared engine (round 2's selection, the final evaluation)
    resume(run)
    got = json.loads((run / "results.json").read_text())
    assert _comparable(got) == _comparable(reference), log
    assert _checkpoint(run) == (2, "done")
    # resuming a finished run is a no-op that returns the same results
    assert _comparable(resume(run).to_dict()) == _comparable(reference)


def test_kill9_during_a_checkpoint_write_keeps_the_previous_checkpoint(tmp_path):
    run = RunDir(tmp_path / "run")
    run.open("seed: 0\n")
    atomic_write(run.checkpoint, json.dumps({"round": 1, "phase": "expanded"}))
    run.close()
    # A child that dies by SIGKILL half-way through writing the next checkpoint (after the temporary
    # file is written and synced, before the rename; and, separately, in the middle of the write).
    for where in ("os.replace", "os.fsync"):
        code = (
            "import os, signal, json\n"
            "from pathlib import Path\n"
            "import apo_local.run.run_dir as rd\n"
            f"target = {where}\n"
            f"def die(*a, **k):\n    os.kill(os.getpid(), signal.SIGKILL)\n"
            f"{where.replace('os.', 'rd.os.')} = die\n"
            f"rd.atomic_write(Path({str(run.checkpoint)!r}), json.dumps({{'round': 2, 'phase': 'selected', 'pad': 'x' * 100000}}))\n"
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
        assert run.load_checkpoint() == {"round": 1, "phase": "expanded"}
    # the leftover temporary file does not disturb the next write
    atomic_write(run.checkpoint, json.dumps({"round": 2, "phase": "selected"}))
    assert run.load_checkpoint() == {"round": 2, "phase": "selected"}
    assert run.checkpoint.stat().st_mode & 0o777 == 0o600


# -- the optimizer returns nothing usable; over-long prompts and examples ------------------------


def _long_task(root: Path) -> Path:
    """Liar's template and labels with 40 training rows, 12 test rows, and some over-long examples."""
    from apo_local.tasks import load_task

    liar = load_task("liar")
    rows = lambda split, n: [{"text": ex.input, "label": ex.label} for ex in liar.split(split)[:n]]  # noqa: E731
    huge = "Statement: " + " ".join(f"word{i} is here" for i in range(300))  # ~ 1.5k tokens > SHORT_CONTEXT
    train = rows("train", 40) + [{"text": huge, "label": "Yes"}, {"text": huge + " again", "label": "No"}]
    test = rows("test", 12) + [{"text": huge + " test", "label": "No"}]
    root.mkdir(parents=True, exist_ok=True)
    for name, data in (("train.jsonl", train), ("test.jsonl", test)):
        (root / name).write_text("".join(json.dumps(r) + "\n" for r in data))
    (root / "template.jinja").write_text((Path(liar.template.origin)).read_text())
    (root / "task.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "liar-long",
                "labels": ["Yes", "No"],
                "positive_label": "Yes",
                "metric": "f1",
                "template": "template.jinja",
                "instruction_text": liar.initial_instruction,
                "data": {
                    "input_column": "text",
                    "label_column": "label",
                    "splits": {"train": "train.jsonl", "test": "test.jsonl"},
                },
            }
        )
    )
    return root / "task.yaml"


SHORT_CONTEXT = 1024  # an engine of its own with a short context: cut rows cost 1k tokens of prefill, not 8k


@pytest.fixture
def short_context_engine():
    from apo_local.engine import EngineSettings, load_engine, shutdown_engines

    started = load_engine(EngineSettings(max_model_len=SHORT_CONTEXT), cache_path=False)
    yield started
    shutdown_engines(only=started)


def test_useless_optimizer_and_overlong_examples(short_context_engine, tmp_path, caplog):
    """Replies cut to one token: every reply is truncated, rejected and counted, no new candidates, the beam
    is kept, the run completes. Over-long examples are cut to fit the context and counted, never a crash."""
    engine = short_context_engine
    task_file = _long_task(tmp_path / "task")
    cfg = build_config(
        {
            **TINY,
            "task": str(task_file),
            "train_limit": None,
            "target": {"max_model_len": SHORT_CONTEXT},
            "search": {**TINY["search"], "parse_fallback": "none"},
            "optimizer": {"max_tokens": 1},
            "evaluation": {"test_limit": 13},
            "cache": str(tmp_path / "cache.sqlite"),
        }
    )
    import logging

    with caplog.at_level(logging.INFO, logger="apo_local"):
        result = optimize(cfg, tmp_path / "run")
    assert engine.max_model_len == SHORT_CONTEXT
    run = tmp_path / "run"
    assert result.rounds_completed == 2 and result.stop_reason == "completed"
    assert result.faults.get("reply_truncated", 0) > 0 and result.replies["truncated"] == result.replies["replies"]
    assert result.beam and [b["text"] for b in result.beam] == [result.initial_prompt]
    for r in (1, 2):
        cands = json.loads((run / "rounds" / f"round-{r:02d}.json").read_text())["candidates"]
        assert [c["operator"] for c in cands] == ["initial"] and cands[0]["status"] == "beam"
    events = [t for t in _trace(run) if "event" in t]
    assert {e["event"] for e in events} >= {"reply_truncated", "example_truncated"}
    assert sum(e["event"] == "reply_truncated" for e in events) == result.faults["reply_truncated"]
    # over-long examples: truncated to fit (counted), scored like any other example, no engine errors
    truncated = [e for e in events if e["event"] == "example_truncated"]
    assert truncated and all(e["tokens_after"] <= engine.max_model_len - 16 < e["tokens_before"] for e in truncated)
    assert result.faults["example_truncated"] == len(truncated)
    # one line per cut row: which row, by how much, and the real limit (the context, not the tokenizer's)
    cut_lines = [r.getMessage() for r in caplog.records if "input cut in the middle" in r.getMessage()]
    firsts = {e["example"]: e for e in reversed(truncated)}  # the first cut of each row
    assert len(cut_lines) == len(firsts) and "test-12" in firsts  # the over-long test row, at least
    for e in firsts.values():
        assert (
            f"example {e['example']}: input cut in the middle, prompt {e['tokens_before']} -> {e['tokens_after']} "
            f"tokens ({e['tokens_before'] - e['tokens_after']} removed): the target model's context is "
            f"{engine.max_model_len} tokens (max_model_len), 16 kept for the answer"
        ) in cut_lines
    assert result.initial_test["errors"] == 0 and result.initial_test["metrics"]["unparsed"] == 0
    assert result.initial_test["metrics"]["n"] == 13


def test_overlong_candidate_is_rejected_with_a_reason(engine, liar):
    from apo_local.engine import RoleEngine, Trace
    from apo_local.search.admission import Admission

    trace = Trace()
    admission = Admission(liar, RoleEngine(engine, "target", trace), trace, max_expansion=2)
    parent = liar.initial_instruction
    # about twice the target's context (the model's own length) but under the character limit of the cheap
    # check: the token count rejects it
    long = " ".join(["Decide whether the statement is a lie."] * (engine.max_model_len // 4))
    reason = admission.reason(long, "x" * len(long))
    assert reason and reason.startswith("too long for the target's context")
    assert admission.reason(parent, parent) == "identical to parent"
    assert admission.reason("", parent) == "empty prompt"
    assert admission.reason("Is the statement false? Answer Yes or No.", parent) is None
    assert trace.faults == {"candidate_rejected": 3}


def test_truncation_policy_on_the_real_tokenizer(engine, liar):
    from apo_local.tasks import Example
    from apo_local.tasks.length import TRUNCATION_MARK

    cuts = []
    limit = 300
    liar.limit_length(engine.count_tokens, limit, lambda ex, a, b: cuts.append((ex.id, a, b)))
    try:
        short = Example("s", "Statement: taxes went up.", "Yes")
        assert liar.render(liar.initial_instruction, short) == liar.template.render(
            liar.initial_instruction, short.input, liar.labels
        )
        text = "HEAD " + "lorem ipsum " * 2000 + " TAIL"
        out = liar.render(liar.initial_instruction, Example("l", text, "No"))
        n = engine.count_tokens([out])[0]
        assert limit - 20 <= n <= limit
        assert TRUNCATION_MARK in out and "HEAD" in out and "TAIL" in out  # middle cut: head and tail kept
        assert liar.initial_instruction in out
        assert cuts == [
            ("l", engine.count_tokens([liar.template.render(liar.initial_instruction, text, liar.labels)])[0], n)
        ]
    finally:
        liar._length = None


# -- the engine fails to start ---------------------------------------------------------------------


def test_engine_start_failure_is_one_line_naming_the_setting(tmp_path):
    """An impossible KV cache: vLLM's engine process fails; the one line gives its root cause and the setting."""
    out = tmp_path / "run"
    proc = subprocess.run(
        [
            *CLI,
            "optimize",
            "--out",
            str(out),
            "--rounds",
            "1",
            "--cache",
            str(tmp_path / "c.sqlite"),
            "--target-kv-cache-gb",
            "10000",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert errors[0].startswith("error: engine failed to start for ") and "kv cache" in errors[0].lower()
    assert "-- lower kv_cache_gb (now 10000.0; --target-kv-cache-gb" in errors[0], errors[0]
    # nothing of a run is left behind: the same --out works once the setting is fixed
    assert not (out / "config.yaml").exists() and not (out / "trace.jsonl").exists()


def test_engine_start_failure_messages():
    """The root cause is found (in the exception, or in the engine process's output) and mapped to a setting."""
    from pydantic import BaseModel, field_validator

    from apo_local.engine import EngineSettings
    from apo_local.engine.start_failure import start_failure

    class ModelConfig(BaseModel):
        max_model_len: int

        @field_validator("max_model_len")
        @classmethod
        def _check(cls, v):
            raise ValueError(f"User-specified max_model_len ({v}) is greater than the derived max_model_len")

    try:
        ModelConfig(max_model_len=10**6)
    except Exception as e:  # noqa: BLE001
        pydantic_error = e
    s = EngineSettings(max_model_len=10**6, kv_cache_gb=2.0, gpu_memory_utilization=0.3)
    msg = start_failure(Path("/m"), s, pydantic_error, [], role="target")
    assert msg == (
        "engine failed to start for /m: User-specified max_model_len (1000000) is greater than the derived "
        "max_model_len -- lower max_model_len (now 1000000; --target-max-model-len)"
    )
    # no role known (an engine started outside a run): both roles' flags are named
    assert start_failure(Path("/m"), s, pydantic_error, []).endswith(
        "(now 1000000; --target-max-model-len / --optimizer-max-model-len)"
    )
    held = [
        "Traceback (most recent call last):",
        "  File ...",
        "RuntimeError: Worker failed with error 'Available memory on node 0 (10.4/17.21 GiB) on kv cache allocation "
        "is less than requested memory for kv (10000.0 GiB).', please check the stack trace above for the root cause",
    ]
    msg = start_failure(Path("/m"), s, RuntimeError("Engine core initialization failed. See root cause above."), held)
    assert msg.startswith("engine failed to start for /m: Available memory on node 0") and "-- lower kv_cache_gb" in msg
    msg = start_failure(Path("/m"), s, RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"), [])
    assert "-- lower gpu_memory_utilization (now 0.3" in msg
    msg = start_failure(Path("/m"), s, OSError("config.json: no such file\nmore"), [])
    assert "\n" not in msg and "-- check the model folder" in msg


def test_engine_start_failure_context_too_long():
    """Refused while vLLM checks its configuration (in this process: nothing is spawned)."""
    from apo_local.engine import EngineSettings
    from apo_local.engine.vllm_engine import VLLMEngine
    from apo_local.models.registry import resolve_model
    from apo_local.support.errors import ApoError

    with pytest.raises(ApoError) as info:
        VLLMEngine(resolve_model(None), EngineSettings(max_model_len=1_000_000))
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("engine failed to start for ")
    assert "-- lower max_model_len (now 1000000; --target-max-model-len / --optimizer-max-model-len)" in msg, msg
