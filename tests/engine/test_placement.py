"""Where two engines go on GPUs and how they split memory (pure arithmetic; no GPU needed)."""

from __future__ import annotations

import json

import pytest

from apo_local.engine.placement import BUDGET, memory_split, place_devices, plan_engines, ray_gpus
from apo_local.engine.settings import EngineSettings

GIB = 1 << 30


def test_ray_asks_for_both_engines_gpus_when_models_differ():
    assert ray_gpus(1, 1, shared=True) == 1
    assert ray_gpus(1, 1, shared=False) == 2
    assert ray_gpus(1, 4, shared=False) == 5
    assert ray_gpus(2, 4, shared=True) == 4


def test_sweep_gpu_count_sums_roles_with_different_models(tmp_path):
    from apo_local.experiments.sweep import gpus_for
    from apo_local.run.config import build_config

    assert gpus_for(build_config({})) == 1  # both roles: the same engine
    other = build_config({"optimizer": {"model": "smollm2-135m", "max_model_len": 1024, "tensor_parallel_size": 2}})
    assert gpus_for(other) == 3  # two engines: 1 + 2 GPUs, not max(1, 2)


def test_devices_per_role_when_there_are_enough_gpus():
    assert place_devices(1, 1, ["0", "1"]) == ("0", "1")
    assert place_devices(1, 2, ["3", "5", "7"]) == ("3", "5,7")  # Ray / the user restricted the devices
    assert place_devices(1, 1, ["0"]) is None
    assert place_devices(2, 2, ["0", "1", "2"]) is None


def test_small_target_beside_large_optimizer_on_one_h200():
    """The case that failed with defaults (each engine asked for 0.85): 135M target + 8B optimizer."""
    weights = (0.27e9, 16.1e9)
    kv = (2 * 30 * 3 * 64 * 2, 2 * 32 * 8 * 128 * 2)  # SmolLM2-135M, Llama-3-8B: KV bytes per token
    t, o = memory_split(weights, kv, 139.8 * GIB)
    assert t + o == pytest.approx(BUDGET, abs=0.002)
    assert t * 139.8 * GIB > weights[0] and o * 139.8 * GIB > weights[1]  # each holds its weights
    assert o > 0.5 and 0.05 <= t < 0.3
    assert t * 139.8 < 139.8 - 0.85 * 139.8 + 10  # the first no longer takes what the second needs


def test_explicit_fractions_override():
    assert memory_split((1e9, 2e9), (1, 1), 80 * GIB, fixed=(0.2, 0.6)) == (0.2, 0.6)
    t, o = memory_split((1e9, 2e9), (1, 1), 80 * GIB, fixed=(0.3, None))
    assert t == 0.3 and o == pytest.approx(BUDGET - 0.3)


def test_split_by_weights_when_gpu_size_unknown():
    t, o = memory_split((1e9, 9e9), (None, None), None)
    assert t + o == pytest.approx(BUDGET) and t < o and t >= 0.15 * BUDGET - 1e-9


def test_plan_written_as_json(tmp_path):
    a, b = EngineSettings(model="a"), EngineSettings(model="b")
    same = plan_engines(a, a, shared=True, gpus=1)
    assert same.how == "shared engine" and same.target == a
    cpu = plan_engines(a, b, shared=False, gpus=0)
    assert cpu.how == "cpu" and cpu.target.gpu_memory_utilization is None
    two = plan_engines(a, b, shared=False, gpus=2, environ={})
    assert two.how == "separate GPUs" and (two.target.device, two.optimizer.device) == ("0", "1")
    one = plan_engines(a, b, shared=False, gpus=1, gpu_gib=80.0, environ={})
    assert one.how == "memory split"
    assert one.target.gpu_memory_utilization + one.optimizer.gpu_memory_utilization <= BUDGET + 0.002
    view = json.loads(one.to_json())
    assert view["how"] == "memory split" and view["optimizer"]["gpu_memory_utilization"] > 0
    mine = plan_engines(EngineSettings(model="a", device="1"), b, shared=False, gpus=2, environ={})
    assert mine.how == "as configured" and mine.target.device == "1"


def test_weights_read_from_safetensors_headers(tmp_path):
    import struct

    from apo_local.engine.modelinfo import kv_bytes_per_token, weight_bytes

    header = json.dumps(
        {
            "a": {"dtype": "BF16", "shape": [10, 4], "data_offsets": [0, 80]},
            "b": {"dtype": "F32", "shape": [3], "data_offsets": [80, 92]},
            "__metadata__": {"format": "pt"},
        }
    ).encode()
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 92)
    assert weight_bytes(tmp_path) == 10 * 4 * 2 + 3 * 4
    (tmp_path / "config.json").write_text(
        json.dumps({"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "hidden_size": 64})
    )
    assert kv_bytes_per_token(tmp_path) == 2 * 2 * 2 * 16 * 2
