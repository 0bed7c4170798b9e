"""apo-local: offline automatic prompt optimization (ProTeGi/APO) on in-process vLLM.

import apo_local as apo
cfg = apo.build_config({"task": "liar"}, preset="smoke")
result = apo.optimize(cfg, out="runs/demo", overwrite=True)
print(result.selected_prompt)  # the prompt to deploy
"""

from apo_local.support import _offline  # noqa: F401  (must run before vllm/transformers import)
from apo_local.support.errors import ApoError

__version__ = "0.1.0"

_LAZY = {
    "build_config": "apo_local.run.config",
    "load_config": "apo_local.run.config",
    "RunConfig": "apo_local.run.config",
    "EngineSettings": "apo_local.engine",
    "load_engine": "apo_local.engine",
    "load_task": "apo_local.tasks",
    "Task": "apo_local.tasks",
    "Scorer": "apo_local.scoring",
    "optimize": "apo_local.run.optimize",
    "resume": "apo_local.run.optimize",
    "RunResult": "apo_local.run.result",
    "show_progress": "apo_local.support.library_logging",
    "Method": "apo_local.search.proposers",
    "register_method": "apo_local.search.proposers",
}
__all__ = ["ApoError", *_LAZY]


def __getattr__(name: str):
    # Lazy: `import apo_local` stays cheap (the CLI's --help, the offline env for child processes).
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)
