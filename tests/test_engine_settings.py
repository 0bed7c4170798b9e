"""Hardware-dependent engine defaults: the CPU allocator preload (pure logic, no engine)."""

from __future__ import annotations

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
