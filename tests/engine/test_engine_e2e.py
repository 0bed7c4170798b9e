"""The real vLLM engine with the embedded model on real Liar rows (no fakes)."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from apo_local.engine import GenerationRequest, RoleEngine, Trace, load_engine

pytestmark = pytest.mark.engine


def test_score_choices_gives_label_log_probs(engine, liar):
    rows = liar.split("train")[:8]
    prompts = [liar.render(liar.initial_instruction, ex) for ex in rows]
    scores = engine.score_choices(prompts, liar.labels)
    assert len(scores) == 8
    for s in scores:
        assert s.error is None and len(s.logprobs) == 2
        assert all(lp < 0 and math.isfinite(lp) for lp in s.logprobs)
        assert math.exp(s.logprobs[0]) + math.exp(s.logprobs[1]) <= 1.0 + 1e-4  # full-vocabulary log-probs
        assert s.best in (0, 1)
    assert len({round(s.logprobs[0], 4) for s in scores}) > 1  # depends on the input


def test_multi_token_labels_match_prompt_logprobs(engine, liar):
    """Trie scoring of multi-token labels equals vLLM's own prompt log-probs of prompt+label."""
    from vllm import SamplingParams, TokensPrompt

    labels = ["True statement", "False claim", "False"]
    prompt = liar.render("Is the statement true or false?", liar.split("test")[0])
    got = engine.score_choices([prompt], labels)[0].logprobs
    backend = engine.inner
    ids = backend.chat.prompt_ids(prompt)
    # "False" is a prefix of "False claim": every label is scored up to the end-of-turn token
    scored = backend.chat.label_ids(labels)
    assert all(s[-1] == backend.chat.end_of_turn_id() for s in scored)
    for label, lp, ids_ in zip(labels, got, scored):
        cont = list(ids_)
        out = backend.llm.generate(
            [TokensPrompt(prompt_token_ids=ids + cont)], SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False
        )[0]
        want = sum(out.prompt_logprobs[len(ids) + j][tok].logprob for j, tok in enumerate(cont))
        assert lp == pytest.approx(want, abs=0.05), label
    assert len(backend.chat.continuation_ids("True statement")) > 1


def test_cache_hit_on_repeated_call(engine, liar):
    prompts = [liar.render("Answer Yes if the statement is a lie.", ex) for ex in liar.split("test")[:4]]
    first = engine.score_choices(prompts, liar.labels)
    hits = engine.hits
    again = engine.score_choices(prompts, liar.labels)
    assert engine.hits == hits + 4
    assert again == first


def test_both_roles_share_one_engine(engine, liar):
    trace = Trace()
    target, optimizer = RoleEngine(engine, "target", trace), RoleEngine(engine, "optimizer", trace)
    assert target.engine is optimizer.engine
    target.score_choices([liar.render(liar.initial_instruction, liar.split("test")[5])], liar.labels)
    gens = optimizer.generate(
        [GenerationRequest("Rewrite: Decide if the statement is a lie.", temperature=0.7, max_tokens=24, n=2, seed=7)]
    )
    assert len(gens[0].texts) == 2 and gens[0].output_tokens > 0
    again = optimizer.generate(
        [GenerationRequest("Rewrite: Decide if the statement is a lie.", temperature=0.7, max_tokens=24, n=2, seed=7)]
    )
    assert again[0].texts == gens[0].texts  # seeded: repeatable
    totals = trace.totals_dict()
    assert totals["target"]["prompts"] == 1 and totals["optimizer"]["prompts"] == 2
    assert totals["optimizer"]["output_tokens"] > 0


def test_too_long_prompt_is_an_error_result_not_a_crash(engine):
    long_prompt = "word " * 9000  # beyond the model's own 8192-token context
    s = engine.score_choices([long_prompt], ["Yes", "No"])[0]
    assert s.error and "too long" in s.error and s.best is None
    g = engine.generate([GenerationRequest(long_prompt, max_tokens=4)])[0]
    assert g.error and "too long" in g.error


@pytest.mark.parametrize("mode", ["logprobs", "generate"])
def test_evaluate_cli_both_modes(engine, mode, tmp_path):
    from apo_local.commands.cli import cli

    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Determine whether the Statement is a lie (Yes) or not (No).")
    res = CliRunner().invoke(
        cli,
        [
            "evaluate",
            "--task",
            "liar",
            "--prompt",
            str(prompt),
            "--split",
            "test",
            "--limit",
            "12",
            "--mode",
            mode,
            "--json",
            "--cache",
            str(tmp_path / "c.sqlite"),
        ],
    )
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["n"] == 12 and report["mode"] == mode
    assert 0.0 <= report["metrics"]["f1"] <= 1.0 and 0.0 <= report["metrics"]["accuracy"] <= 1.0
    assert sum(report["predicted_distribution"].values()) == 12
    assert report["usage"]["prompts"] == 12


def test_two_engines_side_by_side(engine, engine_settings, liar, tmp_path):
    """A second model (here: the same weights with a different context size) loads beside the first."""
    from dataclasses import replace

    from apo_local.engine import shutdown_engines

    other = load_engine(replace(engine_settings, max_model_len=1024, kv_cache_gb=1.0), tmp_path / "c.sqlite")
    try:
        assert other.inner is not engine.inner and other.max_model_len == 1024
        prompts = [liar.render(liar.initial_instruction, ex) for ex in liar.split("test")[:3]]
        a = engine.score_choices(prompts, liar.labels)
        b = other.score_choices(prompts, liar.labels)
        assert [s.best for s in a] == [s.best for s in b]  # same weights, same answers
    finally:
        shutdown_engines(only=other)
    assert engine.score_choices(prompts[:1], liar.labels)[0].error is None  # the first engine is unaffected


def test_aliases_and_seeds_share_one_engine(engine, engine_settings):
    from dataclasses import replace

    from apo_local.models.registry import resolve_model

    same = load_engine(replace(engine_settings, model=str(resolve_model(None)), seed=123), False)
    assert same.inner is engine.inner


def test_cpu_engine_environment_reaches_the_engine(engine):
    """On CPU the engine runs in this process by default (all cores for the model); with
    APO_LOCAL_CPU_ENGINE=subprocess its processes get TCMalloc and oneDNN's duplicate primitive cache
    off, which keeps their memory flat (scripts/soak.py)."""
    import os

    import psutil

    from apo_local.engine.settings import _TCMALLOC_DIRS, cpu_allocator_preload, has_cuda_gpu
    from apo_local.engine.vllm_engine import cpu_engine_in_process

    if has_cuda_gpu():
        pytest.skip("CPU only")

    def started_here(p) -> bool:  # this process's own engine: its first ancestor outside vLLM is this process (not
        q = p.parent()  # a vLLM server or a Ray worker that another test of this worker started)
        while q is not None and q.name().startswith("VLLM::"):
            q = q.parent()
        return q is not None and q.pid == os.getpid()

    engine_procs = [
        p for p in psutil.Process().children(recursive=True) if p.name().startswith("VLLM::") and started_here(p)
    ]
    # what this process started with (/proc/self/environ: the environment at exec, before the engine set anything):
    # the user's own value is kept, else the engine's start must have set 0
    started = dict(kv.split("=", 1) for kv in open("/proc/self/environ").read().split("\0") if "=" in kv)
    want_cache = started.get("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "0")
    if cpu_engine_in_process():
        assert not engine_procs, f"engine processes started although the engine runs in process: {engine_procs}"
        assert os.environ.get("ONEDNN_PRIMITIVE_CACHE_CAPACITY") == want_cache
        return
    assert engine_procs, "no vLLM engine process found"
    want_tcmalloc = (
        cpu_allocator_preload({}, _TCMALLOC_DIRS) is not None
        and os.environ.get("APO_LOCAL_CPU_ALLOCATOR", "tcmalloc") == "tcmalloc"
    )
    for p in engine_procs:
        env = dict(kv.split("=", 1) for kv in open(f"/proc/{p.pid}/environ").read().split("\0") if "=" in kv)
        assert env.get("ONEDNN_PRIMITIVE_CACHE_CAPACITY") == want_cache
        if want_tcmalloc:
            assert "libtcmalloc" in open(f"/proc/{p.pid}/maps").read(), (
                f"{p.name()} (pid {p.pid}) runs without TCMalloc"
            )
