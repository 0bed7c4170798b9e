"""Shared helpers for the benchmark scripts (machine facts, instruction set, vLLM counters)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INSTRUCTIONS = ROOT / "scripts" / "bench_instructions.json"


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict:
    """Facts to print next to every figure: CPU, cores, memory, GPU, load, versions."""
    facts: dict = {
        "host": platform.node(),
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "load_avg": load_avg(),
        "utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        facts["cpu"] = next(
            (ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if ln.startswith("Model name")), "?"
        )
    except Exception:
        facts["cpu"] = platform.processor() or "?"
    try:
        facts["mem_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30), 1)
    except (ValueError, OSError):
        pass
    try:
        import torch

        facts["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:
        facts["gpu"] = None
    try:
        import vllm

        facts["vllm"] = vllm.__version__
    except Exception:
        pass
    return facts


def load_instructions(n: int) -> list[str]:
    """``n`` distinct candidate instructions from ``scripts/bench_instructions.json``."""
    data = json.loads(INSTRUCTIONS.read_text())
    texts = [c["text"] for c in data["instructions"]]
    if n > len(texts):
        raise SystemExit(
            f"{INSTRUCTIONS} holds {len(texts)} instructions, {n} asked; rebuild it with "
            f"scripts/bench_scoring.py --collect RUN_DIR ... --collect-count {n}"
        )
    return texts[:n]


def collect_instructions(run_dirs: list[str], tokenizer_path: str, count: int, lo: int = 100, hi: int = 300) -> dict:
    """Candidate texts of ``lo``..``hi`` tokens from real ProTeGi rounds; padded with concatenations
    of two shorter candidates (each labelled) when the runs hold too few long ones."""
    import glob

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_path)
    texts: dict[str, int] = {}
    for d in run_dirs:
        for f in sorted(glob.glob(str(Path(d) / "rounds" / "*.json"))):
            for c in json.loads(Path(f).read_text()).get("candidates", []):
                t = c["text"].strip()
                if t and t not in texts:
                    texts[t] = len(tok(t, add_special_tokens=False)["input_ids"])
    real = [{"text": t, "tokens": n, "source": "round file"} for t, n in texts.items() if lo <= n <= hi]
    out = list(real)
    shorter = sorted((t for t, n in texts.items() if 20 <= n < lo), key=lambda t: -texts[t])
    pool = [t for t, n in texts.items() if 20 <= n <= hi]
    i = 0
    seen = {c["text"] for c in out}
    while len(out) < count and pool:
        a = (shorter or pool)[i % len(shorter or pool)]
        b = pool[(i * 7 + 3) % len(pool)]
        i += 1
        if a == b:
            continue
        text = a + "\n\n" + b
        n = len(tok(text, add_special_tokens=False)["input_ids"])
        if lo <= n <= hi and text not in seen:
            seen.add(text)
            out.append({"text": text, "tokens": n, "source": "concatenation of two round-file candidates"})
        if i > 50 * count:
            break
    return {
        "note": f"{len(real)} candidates of {lo}-{hi} tokens from real ProTeGi round files; "
        f"{len(out) - len(real)} more made by concatenating two shorter candidates",
        "sources": run_dirs,
        "instructions": out[:count],
    }


# -- vLLM counters -----------------------------------------------------------------------------


def enable_inprocess_stats() -> None:
    """Make ``vllm.LLM`` keep its Prometheus counters (it disables them by default), so the
    benchmark can read prompt tokens and prefix-cache hits. Call before the engine starts."""
    import vllm

    if getattr(vllm.LLM, "_bench_stats", False):
        return
    base = vllm.LLM

    class LLM(base):  # type: ignore[misc, valid-type]
        _bench_stats = True

        def __init__(self, *args, **kwargs):
            kwargs.setdefault("disable_log_stats", False)
            super().__init__(*args, **kwargs)

    vllm.LLM = LLM


def inprocess_counters(llm) -> dict[str, float]:
    out: dict[str, float] = {}
    try:
        metrics = llm.get_metrics()
    except Exception:
        return out
    for m in metrics:
        value = getattr(m, "value", None)
        if isinstance(value, (int, float)):
            name = m.name[:-6] if m.name.endswith("_total") else m.name
            out[name] = out.get(name, 0.0) + float(value)
    return out


def normalize_counters(raw: dict[str, float]) -> dict[str, float]:
    return {(k[:-6] if k.endswith("_total") else k): v for k, v in raw.items()}


def counter_delta(before: dict, after: dict) -> dict:
    """Prompt tokens, prefix-cache hits, tokens actually prefilled and generated between two snapshots."""
    b, a = normalize_counters(before), normalize_counters(after)
    d = {
        k: a.get(k, 0.0) - b.get(k, 0.0)
        for k in (
            "vllm:prompt_tokens",
            "vllm:generation_tokens",
            "vllm:prefix_cache_queries",
            "vllm:prefix_cache_hits",
            "vllm:request_success",
        )
    }
    if not any(d.values()):
        return {}
    hits = d["vllm:prefix_cache_hits"]
    return {
        "prompt_tokens": int(d["vllm:prompt_tokens"]),
        "generated_tokens": int(d["vllm:generation_tokens"]),
        "prefix_cache_hit_tokens": int(hits),
        "prefilled_tokens": int(d["vllm:prompt_tokens"] - hits),
        "prefix_cache_hit_rate": round(hits / d["vllm:prefix_cache_queries"], 3)
        if d["vllm:prefix_cache_queries"]
        else None,
    }


def write_json(path: str | Path, data) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=2) + "\n")


# -- run directories ---------------------------------------------------------------------------

EXPANSION_PHASES = ("minibatch", "gradient", "edit", "paraphrase")


def trace_by_phase(trace_path: str | Path) -> dict:
    """Totals per trace phase and role (engine calls, prompts, input/output tokens, seconds), plus
    ``expansion`` (minibatch + gradient + edit + paraphrase) and ``total``."""
    import collections

    rows = [json.loads(line) for line in Path(trace_path).read_text().splitlines() if line.strip()]
    out: dict = collections.defaultdict(
        lambda: collections.defaultdict(lambda: dict(calls=0, prompts=0, input_tokens=0, output_tokens=0, seconds=0.0))
    )
    faults: dict = collections.Counter()
    for r in rows:
        if "event" in r:
            faults[r["event"]] += 1
            continue
        groups = [r["phase"], "total"] + (["expansion"] if r["phase"] in EXPANSION_PHASES else [])
        for g in groups:
            for role in (r["role"], "all"):
                t = out[g][role]
                t["calls"] += 1
                t["prompts"] += r["prompts"]
                t["input_tokens"] += r["input_tokens"]
                t["output_tokens"] += r["output_tokens"]
                t["seconds"] = round(t["seconds"] + r["seconds"], 3)
    res = {g: dict(v) for g, v in out.items()}
    res["faults"] = dict(faults)
    return res


def tree_cpu_seconds(*pids: int) -> float:
    """User + system CPU seconds used so far by these processes and all their live descendants
    (all threads). On a shared machine this is steadier than wall time: other people's load slows
    the wall clock, not the CPU work a method needs."""
    import os as _os

    tick = _os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    stats: dict[int, tuple[int, float]] = {}
    for entry in _os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        ppid, utime, stime = int(fields[1]), int(fields[11]), int(fields[12])
        stats[int(entry)] = (ppid, (utime + stime) / tick)
        children.setdefault(ppid, []).append(int(entry))
    total, todo, seen = 0.0, list(pids), set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in stats:
            continue
        seen.add(pid)
        total += stats[pid][1]
        todo += children.get(pid, [])
    return total
