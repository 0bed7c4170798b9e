"""Hardware-dependent engine defaults: the CPU allocator preload (pure logic, no engine)."""

from __future__ import annotations

from pathlib import Path

from apo_local.engine.settings import cpu_allocator_preload


def _lib_dir(tmp_path):
    d = tmp_path / "lib"
    d.mkdir()
    (d / "libtcmalloc_minimal.so.4").write_bytes(b"")
    return d


def test_prepends_tcmalloc_and_keeps_existing_preloads(tmp_path):
    d = _lib_dir(tmp_path)
    env = {"LD_PRELOAD": "/opt/libgomp.so.1"}
    lib = cpu_allocator_preload(env, search_dirs=(str(tmp_path / "missing"), str(d)))
    assert lib == str(d / "libtcmalloc_minimal.so.4")
    assert env["LD_PRELOAD"] == f"{lib}:/opt/libgomp.so.1"


def test_sets_preload_when_none_was_set(tmp_path):
    d = _lib_dir(tmp_path)
    env: dict = {}
    assert cpu_allocator_preload(env, search_dirs=(str(d),)) == str(d / "libtcmalloc_minimal.so.4")
    assert env["LD_PRELOAD"] == str(d / "libtcmalloc_minimal.so.4")


def test_already_preloaded_is_left_alone(tmp_path):
    d = _lib_dir(tmp_path)
    env = {"LD_PRELOAD": "/x/libtcmalloc.so.4:/opt/libgomp.so.1"}
    assert cpu_allocator_preload(env, search_dirs=(str(d),)) == "/x/libtcmalloc.so.4"
    assert env["LD_PRELOAD"] == "/x/libtcmalloc.so.4:/opt/libgomp.so.1"


def test_system_allocator_on_request(tmp_path):
    d = _lib_dir(tmp_path)
    env = {"APO_LOCAL_CPU_ALLOCATOR": "system", "LD_PRELOAD": "/opt/libgomp.so.1"}
    assert cpu_allocator_preload(env, search_dirs=(str(d),)) is None
    assert env["LD_PRELOAD"] == "/opt/libgomp.so.1"


def test_not_installed_changes_nothing(tmp_path):
    env = {"LD_PRELOAD": "/opt/libgomp.so.1"}
    assert cpu_allocator_preload(env, search_dirs=(str(tmp_path),)) is None
    assert env == {"LD_PRELOAD": "/opt/libgomp.so.1"}


def test_cpu_engine_environment_bounds_onednn_cache_and_preloads(tmp_path):
    from apo_local.engine.settings import cpu_engine_environment

    d = _lib_dir(tmp_path)
    env: dict = {}
    applied = cpu_engine_environment(env, search_dirs=(str(d),))
    assert env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "0"
    assert applied == {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "0", "LD_PRELOAD": str(d / "libtcmalloc_minimal.so.4")}
    user = {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "512", "APO_LOCAL_CPU_ALLOCATOR": "system"}
    assert cpu_engine_environment(user, search_dirs=(str(d),)) == {}
    assert user["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "512" and "LD_PRELOAD" not in user


# -- CUDA start policy (pure logic: no GPU, no CUDA call) -------------------------------------------


def _fake_driver(tmp_path, n):
    d = tmp_path / "gpus"
    d.mkdir()
    for i in range(n):
        (d / f"0000:0{i}:00.0").mkdir()
    return str(d)


def test_gpus_counted_from_the_driver_without_cuda(tmp_path, monkeypatch):
    """The count comes from the NVIDIA driver's /proc listing, restricted by CUDA_VISIBLE_DEVICES;
    torch.cuda is never asked (it may initialise CUDA, which breaks vLLM's forked engine process)."""
    import sys

    from apo_local.engine.settings import cuda_devices

    monkeypatch.setitem(sys.modules, "torch", None)  # any torch import would fail
    proc = _fake_driver(tmp_path, 2)
    assert cuda_devices({}, proc) == 2
    assert cuda_devices({"CUDA_VISIBLE_DEVICES": "1"}, proc) == 1
    assert cuda_devices({"CUDA_VISIBLE_DEVICES": ""}, proc) == 0
    assert cuda_devices({"CUDA_VISIBLE_DEVICES": "-1"}, proc) == 0
    monkeypatch.setitem(sys.modules, "pynvml", None)  # no NVML either: no driver means CPU
    assert cuda_devices({}, str(tmp_path / "missing")) == 0


def test_has_cuda_gpu_does_not_initialise_cuda(monkeypatch):
    """has_cuda_gpu must not call torch.cuda (is_available initialises the CUDA driver unless
    PYTORCH_NVML_BASED_CUDA_CHECK=1; device_count does too): a forked vLLM engine then fails."""
    import torch

    from apo_local.engine import settings

    calls = []

    def touched(*a, **k):
        calls.append(1)
        return False

    monkeypatch.setattr(torch.cuda, "is_available", touched)
    monkeypatch.setattr(torch.cuda, "device_count", touched)
    monkeypatch.setattr(torch.cuda, "init", touched)
    monkeypatch.delenv("APO_LOCAL_FORCE_CPU", raising=False)
    settings.has_cuda_gpu()
    assert not calls, "has_cuda_gpu asked torch.cuda"


def test_spawn_is_the_default_start_on_cuda_unless_the_user_chose():
    from apo_local.engine.settings import cuda_start_environment

    env: dict = {}
    assert cuda_start_environment(env, gpus=1) == {"VLLM_WORKER_MULTIPROC_METHOD": "spawn"}
    assert env["VLLM_WORKER_MULTIPROC_METHOD"] == "spawn"
    user = {"VLLM_WORKER_MULTIPROC_METHOD": "fork"}
    assert cuda_start_environment(user, gpus=1) == {} and user["VLLM_WORKER_MULTIPROC_METHOD"] == "fork"
    cpu: dict = {}
    assert cuda_start_environment(cpu, gpus=0) == {} and cpu == {}
    forced = {"APO_LOCAL_FORCE_CPU": "1"}
    assert cuda_start_environment(forced, gpus=2) == {} and "VLLM_WORKER_MULTIPROC_METHOD" not in forced


def test_engine_args_pass_through_and_win_over_defaults():
    from pathlib import Path

    from apo_local.engine.vllm_engine import engine_kwargs
    from apo_local.run.config import build_config

    cfg = build_config(
        {
            "target": {
                "engine_args": {
                    "quantization": "awq",
                    "trust_remote_code": True,
                    "tokenizer_mode": "mistral",
                    "pipeline_parallel_size": 2,
                    "block_size": 16,
                },
                "max_model_len": 4096,
            }
        }
    )
    s = cfg.target.settings(0).resolved()
    hash(s)  # settings stay hashable (engines are keyed on them)
    kw = engine_kwargs(Path("/m"), s, cuda=False)
    assert kw["quantization"] == "awq" and kw["trust_remote_code"] is True and kw["tokenizer_mode"] == "mistral"
    assert kw["pipeline_parallel_size"] == 2 and kw["block_size"] == 16  # the user's block size wins
    assert kw["max_model_len"] == 4096
    default = engine_kwargs(Path("/m"), build_config({}).target.settings(0).resolved(), cuda=False)
    assert default["max_model_len"] == -1  # the model's own length, fitted to the KV memory by vLLM
    assert "quantization" not in default


def test_start_failure_hint_names_the_failing_role():
    from apo_local.engine.settings import EngineSettings
    from apo_local.engine.start_failure import start_failure

    s = EngineSettings(gpu_memory_utilization=0.85)
    exc = ValueError(
        "Free memory on device (19.22/139.8 GiB) on startup is less than desired GPU memory "
        "utilization (0.85, 118.83 GiB)."
    )
    msg = start_failure(Path("/models/big"), s, exc, [], role="optimizer")
    assert "--optimizer-gpu-memory-utilization" in msg and "--target-" not in msg and "\n" not in msg
    bad = start_failure(
        Path("/m"),
        EngineSettings(engine_args={"foo": 1}),
        TypeError("EngineArgs.__init__() got an unexpected keyword argument 'foo'"),
        [],
        role="target",
    )
    assert "target.engine_args" in bad and "foo" in bad


def test_cpu_auto_dtype_is_float32_without_native_bf16(monkeypatch):
    """bf16 without AVX-512 BF16 / AMX is emulated by oneDNN (9x slower scoring measured): float32 there."""
    from apo_local.engine import settings as st

    avx2 = "processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 fma\n"
    bf16 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"
    assert st.cpu_auto_dtype(avx2) == "float32"
    assert st.cpu_auto_dtype(bf16) == "auto"
    monkeypatch.setattr(st, "has_cuda_gpu", lambda: False)
    monkeypatch.setattr(st, "cpu_auto_dtype", lambda: "float32")
    assert st.EngineSettings().resolved().dtype == "float32"
    assert st.EngineSettings(dtype="bfloat16").resolved().dtype == "bfloat16"  # an explicit choice is kept
    monkeypatch.setattr(st, "has_cuda_gpu", lambda: True)
    assert st.EngineSettings().resolved().dtype == "auto"  # GPUs compute bf16 natively


def test_cpu_kv_cache_default_from_the_environment(monkeypatch):
    """No kv_cache_gb in the settings: on CPU APO_LOCAL_CPU_KV_CACHE_GB (GiB) where set, else 2 GiB; settings that
    name one keep it; a value that is not a positive number is one clear error."""
    import pytest

    from apo_local.engine import settings as S
    from apo_local.support.errors import ApoError

    monkeypatch.setattr(S, "has_cuda_gpu", lambda: False)
    monkeypatch.delenv("APO_LOCAL_CPU_KV_CACHE_GB", raising=False)
    assert S.EngineSettings().resolved().kv_cache_gb == 2.0
    for raw, gb in (("0.5", 0.5), ("3", 3.0), (" ", 2.0)):
        monkeypatch.setenv("APO_LOCAL_CPU_KV_CACHE_GB", raw)
        assert S.EngineSettings().resolved().kv_cache_gb == gb
    assert S.EngineSettings(kv_cache_gb=4.0).resolved().kv_cache_gb == 4.0
    for raw in ("lots", "-1", "0"):
        monkeypatch.setenv("APO_LOCAL_CPU_KV_CACHE_GB", raw)
        with pytest.raises(ApoError, match="APO_LOCAL_CPU_KV_CACHE_GB"):
            S.EngineSettings().resolved()


def test_an_engine_start_environment_is_undone_whole():
    """The start's variables hold while it runs; afterwards the values are back and keys it added are gone."""
    import os

    from apo_local.engine.settings import scoped_environment

    os.environ["APO_LOCAL_TEST_KEPT"] = "before"
    try:
        with scoped_environment({"APO_LOCAL_TEST_KEPT": "during", "APO_LOCAL_TEST_NEW": "1"}):
            assert os.environ["APO_LOCAL_TEST_KEPT"] == "during" and os.environ["APO_LOCAL_TEST_NEW"] == "1"
            os.environ["APO_LOCAL_TEST_ENGINE_OWN"] = "set by the engine"
        assert os.environ["APO_LOCAL_TEST_KEPT"] == "before"
        assert "APO_LOCAL_TEST_NEW" not in os.environ and "APO_LOCAL_TEST_ENGINE_OWN" not in os.environ
    finally:
        os.environ.pop("APO_LOCAL_TEST_KEPT", None)
