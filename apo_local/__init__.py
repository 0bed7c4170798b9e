"""apo-local: offline automatic prompt optimization on in-process vLLM."""

from apo_local import _offline  # noqa: F401  (must run before vllm/transformers import)
from apo_local.errors import ApoError

__all__ = ["ApoError"]
__version__ = "0.1.0"
