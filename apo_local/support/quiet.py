"""Third-party noise: quiet by default, all of it back with ``apo-local --verbose``.

vLLM, torch and transformers print warnings that say nothing actionable to an apo-local user
(Triton, model runner V2, NUMA binding, FutureWarnings, loading bars) -- and vLLM's logger writes to
*stdout* unless told otherwise. apo-local keeps stdout for results only:

- ``_offline`` points vLLM's logger at stderr for every entry point (``VLLM_LOGGING_STREAM``);
- ``set_verbosity`` (the CLI, before vLLM is imported) lowers vLLM's level to errors, silences
  transformers' warnings and Python warnings, unless ``--verbose``;
- ``StartupTap`` holds back what an engine prints at file-descriptor level while it starts (C++
  warnings, progress bars, child processes): dropped when the engine starts, mined for the root cause
  when it does not;
- ``quiet_transformers`` silences transformers while it loads a tokenizer or model.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import threading
import warnings
from contextlib import contextmanager, redirect_stderr

VERBOSE_ENV = "APO_LOCAL_VERBOSE"


def quiet() -> bool:
    """True unless the user asked for engine logs (``--verbose``, or vLLM's level set to INFO / DEBUG)."""
    if os.environ.get(VERBOSE_ENV) == "1":
        return False
    return os.environ.get("VLLM_LOGGING_LEVEL", "WARNING").upper() not in ("INFO", "DEBUG")


def set_verbosity(verbose: bool) -> None:
    """The CLI's switch; call before vLLM or transformers is imported (they read the environment then).
    Quiet: vLLM logs errors only, transformers errors only, no Python warnings (in engine processes too).
    Verbose: vLLM's INFO log and every warning, on stderr."""
    if verbose:
        os.environ[VERBOSE_ENV] = "1"
        os.environ["VLLM_LOGGING_LEVEL"] = "INFO"
        os.environ.pop("TRANSFORMERS_VERBOSITY", None)
        return
    os.environ.pop(VERBOSE_ENV, None)
    os.environ["VLLM_LOGGING_LEVEL"] = "ERROR"
    os.environ["TRANSFORMERS_VERBOSITY"] = "error"  # e.g. "Token indices sequence length ... (9327 > 8192)"
    os.environ.setdefault("PYTHONWARNINGS", "ignore")  # inherited by engine processes
    warnings.simplefilter("ignore")
    for name in ("vllm", "transformers", "torch", "datasets", "httpx"):
        logging.getLogger(name).setLevel(logging.ERROR)


# vLLM warnings that say nothing actionable once the engine runs in process, dropped even when vLLM logs
# warnings (library use): it repeats the set_num_threads one whenever a library asks torch for threads,
# and Intel OpenMP is not something apo-local ships.
_NOISE = ("torch.set_num_threads` after the thread binding", "libiomp is not found in LD_PRELOAD")


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not any(n in msg for n in _NOISE)


def drop_vllm_noise() -> None:
    logger = logging.getLogger("vllm.v1.worker.cpu_worker")  # where both come from
    if not any(isinstance(f, _DropNoise) for f in logger.filters):
        logger.addFilter(_DropNoise())


class StartupTap:
    """While an engine starts, file descriptors 2 and 1 (inherited by its engine-core and worker
    processes) are a pipe read by a thread of this process: start-up output stays off the user's
    terminal and off stdout. ``release(replay=False)`` drops it once the engine runs; when the start
    fails the held lines are returned, to find the root cause in (a child's traceback would otherwise
    bury the one line that matters). Afterwards the pipe is forwarded live to the real stderr."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.live = False
        self._lock = threading.Lock()
        sys.stdout.flush()
        sys.stderr.flush()
        self._stdout, self._stderr = os.dup(1), os.dup(2)
        read, write = os.pipe()
        os.dup2(write, 2)
        os.dup2(write, 1)
        os.close(write)
        threading.Thread(target=self._pump, args=(read,), daemon=True, name="apo-startup-tap").start()

    def _pump(self, read: int) -> None:
        with os.fdopen(read, "rb") as pipe:
            for line in pipe:
                with self._lock:
                    if self.live:
                        _write_all(self._stderr, line)
                    elif len(self.lines) < 5000:
                        self.lines.append(line)

    def release(self, replay: bool) -> list[str]:
        """Give this process its stdout and stderr back (``replay``: write the held lines to stderr);
        the held lines, as text."""
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self._stdout, 1)
        os.dup2(self._stderr, 2)
        os.close(self._stdout)
        with self._lock:
            held, self.lines, self.live = self.lines, [], True
            if replay:
                for line in held:
                    _write_all(self._stderr, line)
        return [line.decode("utf-8", "replace").rstrip("\n") for line in held]


def _write_all(fd: int, data: bytes) -> None:
    try:
        while data:
            data = data[os.write(fd, data) :]
    except OSError:
        pass


@contextmanager
def quiet_transformers(capture_stderr: bool = False):
    """transformers at errors only and without progress bars while loading (``capture_stderr``: also
    swallow what is printed to ``sys.stderr``, e.g. the GGUF loader's own tqdm bar); errors still raise."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        if capture_stderr:
            with redirect_stderr(io.StringIO()):
                yield
        else:
            yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()
