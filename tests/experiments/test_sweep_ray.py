"""The Ray path of a sweep on CPU: a local Ray instance, two small cells, each a Ray task that runs
the cell in a worker process (which loads its own engine and keeps it for the next cell).

The cells run on vLLM (the default backend, the embedded model), the engine users run, in the Ray worker beside
the session's engine. The local instance has one CPU and each cell asks for one, so the two cells run one after
the other in the same worker (one engine load; one OpenMP thread, which is what a small shared machine runs
fastest).
"""

from __future__ import annotations

import json
import os
import sqlite3

import pytest
import yaml

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'apo-local[ray]'")

from apo_local.experiments import sweep as S  # noqa: E402
from tests.conftest import TINY  # noqa: E402

SMALL = {
    **TINY,
    "search": {**TINY["search"], "rounds": 1, "max_expansion": 1},
    "protegi": {**TINY["protegi"], "n_gradients": 1},
    "selection": {**TINY["selection"], "budget": 16},
    "optimizer": {"max_tokens": 32},  # names no model: shares the target's engine
    "evaluation": {"test_limit": 8},
}


@pytest.fixture(scope="module")
def local_ray():
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    # Ray's OOM killer watches the whole node; on a shared test box other processes' memory (and this
    # session's vLLM engine) can push it over its threshold and kill the small cell worker.
    os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
    ray.init(
        num_cpus=1,
        num_gpus=0,
        include_dashboard=False,
        object_store_memory=100 * 1024**2,
        log_to_driver=False,
        configure_logging=False,
    )
    yield
    ray.shutdown()


@pytest.mark.engine
@pytest.mark.slow  # each cell's Ray worker starts its own engine
def test_two_cells_as_ray_tasks(local_ray, tmp_path):
    spec, base = S.parse_sweep(
        {
            "base": {**SMALL, "cache": str(tmp_path / "cache.sqlite")},
            "grid": {"selection.selector": ["ucb", "uniform"]},
            "ray": {"num_cpus_per_cell": 1},
        }
    )
    out = tmp_path / "sweep"
    result = S.run_sweep(spec, base, out, use_ray=True)
    assert set(result.status.values()) == {"ran"}, result.status
    assert len(result.cells) == 2
    for c in result.cells:
        res = json.loads((out / c.id / "results.json").read_text())
        assert res["rounds_completed"] == 1 and res["usage"]["optimizer"]["output_tokens"] > 0
        assert yaml.safe_load((out / c.id / "config.yaml").read_text())["target"]["backend"] == "vllm"
        assert (out / c.id / "trace.jsonl").is_file() and (out / c.id / "rounds" / "round-01.json").is_file()
    with sqlite3.connect(
        tmp_path / "cache.sqlite"
    ) as db:  # the engine that answered: vLLM's (transformers' ends |hf...)
        values = [json.loads(v) for (v,) in db.execute("SELECT value FROM results") if v.startswith("{")]
    ids = {v.get("model_id") for v in values if isinstance(v, dict)} - {None}
    assert len(ids) == 1 and "|hf" not in ids.pop()
    assert {c["status"] for c in S.load_manifest(out)} == {"done"}
    assert (out / "results.csv").read_text().count("\ncell,") == 2

    again = S.run_sweep(spec, base, out, use_ray=True)  # finished cells: no Ray task at all
    assert set(again.status.values()) == {"done"}


def test_cells_ask_for_their_tensor_parallel_gpus():
    spec, base = S.parse_sweep(
        {
            "base": {
                **SMALL,
                "target": {"tensor_parallel_size": 2},
                "optimizer": {"model": "smollm2-135m", "tensor_parallel_size": 4},
            }
        }
    )
    # Different tensor-parallel sizes: two engines, each on its own GPUs: 2 + 4
    assert S.gpus_for(S.expand(spec, base)[0].config) == 6
    spec, base = S.parse_sweep({"base": {**SMALL, "target": {"tensor_parallel_size": 4}}})
    assert S.gpus_for(S.expand(spec, base)[0].config) == 4  # one engine shared by both roles
