"""The offline install bundle: which vLLM pins a torch, and the install script (pure logic).

The full bundle (downloads, an offline install into a fresh venv) is checked by
scripts/check_bundle.sh; its figures are in docs/gpu.md.
"""

from __future__ import annotations

import pytest

from apo_local.commands.bundle import TORCH_FAMILY, VERIFIED_PINS, install_script, pick_vllm, torch_pin
from apo_local.support.errors import ApoError


def test_torch_pin_read_from_requires_dist():
    assert torch_pin(["regex", "torch==2.11.0", "torchaudio==2.11.0"]) == "2.11.0"
    assert torch_pin(["torch == 2.13.0 ; platform_system == 'Linux'"]) == "2.13.0"
    assert torch_pin(["torch>=2.1", "numpy"]) is None
    assert torch_pin(["torch==2.9.0; extra == 'dev'"]) is None


def test_newest_vllm_pinning_the_torch():
    assert pick_vllm("2.11.0", VERIFIED_PINS) == "0.26.0"
    assert pick_vllm("2.11.0+cu130", VERIFIED_PINS) == "0.26.0"  # the local label does not matter
    assert pick_vllm("2.13.0", VERIFIED_PINS) == "0.32.0"
    assert pick_vllm("2.14.0", VERIFIED_PINS) == "0.33.0"
    assert pick_vllm("2.13.0", {"0.9.0": "2.13.0", "0.10.0": "2.13.0", "0.11.0": None}) == "0.10.0"  # numeric order
    with pytest.raises(ApoError, match="no supported vLLM pins torch 2.5.0"):
        pick_vllm("2.5.0", VERIFIED_PINS)


def test_supported_range():
    versions = sorted(VERIFIED_PINS, key=lambda v: tuple(map(int, v.split("."))))
    assert versions[0] == "0.26.0" and versions[-1] == "0.33.0"


def test_torch_and_cuda_packages_are_left_to_the_target():
    for name in ("torch", "torchvision", "torchaudio", "triton", "nvidia-cublas-cu12", "torchcodec"):
        assert TORCH_FAMILY.match(name)
    for name in ("transformers", "vllm", "torch-c-dlpack-ext", "xgrammar"):
        assert not TORCH_FAMILY.match(name)


def test_install_script_is_offline_and_lists_every_wheel():
    text = install_script(["a-1-py3-none-any.whl", "vllm-0.26.0-cp38-abi3-manylinux_2_28_x86_64.whl"], "3.12")
    assert "--no-index" in text and "--no-deps" in text
    assert '"$HERE/wheels/a-1-py3-none-any.whl"' in text and "vllm-0.26.0" in text


def test_platform_tags_cover_older_glibc():
    from apo_local.commands.bundle import platform_tags

    tags = platform_tags("manylinux_2_28_x86_64")
    assert tags[0] == "manylinux_2_28_x86_64" and "manylinux_2_17_x86_64" in tags and "manylinux2014_x86_64" in tags
    assert platform_tags("macosx_14_0_arm64") == ["macosx_14_0_arm64"]
