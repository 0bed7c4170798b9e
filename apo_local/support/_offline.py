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
    "RAY_USAGE_STATS_ENABLED": "0",
    "TOKENIZERS_PARALLELISM": "false",
}


# Defaults only: users may ask vLLM for more. vLLM logs to stdout unless told otherwise; stdout is for results.
QUIET_ENV = {"VLLM_LOGGING_LEVEL": "WARNING", "VLLM_LOGGING_STREAM": "ext://sys.stderr"}

# Loopback only, as defaults: without these vLLM finds "its" IP by a UDP connect() to 8.8.8.8
# (no packet is sent, but it is an outbound attempt) and may bind its message queues to that
# address. A single-machine tool has no use for anything but loopback.
LOOPBACK_ENV = {"VLLM_HOST_IP": "127.0.0.1", "VLLM_LOOPBACK_IP": "127.0.0.1"}


def apply() -> None:
    # Forced, not defaulted: a user's shell must not be able to turn telemetry back on by accident.
    os.environ.update(OFFLINE_ENV)
    for key, value in {**QUIET_ENV, **LOOPBACK_ENV}.items():
        os.environ.setdefault(key, value)


apply()
