"""Air-gap by construction: set offline and no-telemetry switches before vLLM or HF import.

Imported first by ``apo_local/__init__.py`` so that every entry point (CLI, library,
tests, child processes spawned by vLLM, which inherit the environment) is covered.
"""

import os

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "VLLM_DO_NOT_TRACK": "1",
    "DO_NOT_TRACK": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


QUIET_ENV = {"VLLM_LOGGING_LEVEL": "WARNING"}  # a default only: users may ask vLLM for more


def apply() -> None:
    # Forced, not defaulted: a user's shell must not be able to turn telemetry back on by accident.
    os.environ.update(OFFLINE_ENV)
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)


apply()
