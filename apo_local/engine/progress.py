"""How far a running engine call has got, for the heartbeat lines of long calls (``roles.py``): the requests
finished and the tokens generated so far. ``RoleEngine`` opens a ``CallProgress`` for each call (per thread);
a backend that can count reports into it (vLLM: through the progress-bar hook of ``LLM.generate``)."""

from __future__ import annotations

import re
import threading
import time
from contextlib import contextmanager

_CURRENT = threading.local()
_OUT_SPEED = re.compile(r"output: ([0-9.]+) toks/s")


class CallProgress:
    """Requests finished (of ``total``, when a backend says) and output tokens generated so far."""

    def __init__(self) -> None:
        self.done, self.total, self.out_tokens = 0, None, None
        self._lock = threading.Lock()

    def add(self, done: int = 0, total: int | None = None, out_tokens: int | None = None) -> None:
        with self._lock:
            self.done += done
            if total is not None:
                self.total = (self.total or 0) + total
            if out_tokens is not None:
                self.out_tokens = out_tokens

    def describe(self) -> str:
        """'120 of 256 requests done, 3,400 tokens out' (what is known), or ''."""
        with self._lock:
            parts = []
            if self.total:
                parts.append(f"{self.done} of {self.total} requests done")
            if self.out_tokens:
                parts.append(f"{self.out_tokens:,} tokens out")
        return ", ".join(parts)


@contextmanager
def tracking():
    """A fresh ``CallProgress`` for the engine call this thread makes now."""
    progress, previous = CallProgress(), getattr(_CURRENT, "progress", None)
    _CURRENT.progress = progress
    try:
        yield progress
    finally:
        _CURRENT.progress = previous


def current() -> CallProgress | None:
    return getattr(_CURRENT, "progress", None)


class ProgressBar:
    """What vLLM's ``LLM.generate(use_tqdm=ProgressBar)`` drives instead of a tqdm bar: it counts the finished
    requests and, from the speed vLLM computes, the tokens generated, into this thread's ``CallProgress``; with
    ``show`` (a person watching a long batch) a real tqdm bar is drawn as well."""

    show = False

    def __init__(self, iterable=None, total: int | None = None, postfix: str = "", **kwargs) -> None:
        # vLLM calls it two ways: around an iterable (rendering prompts: passed through, not counted), and with
        # total= for the requests it then reports as they finish
        self.n, self.total, self._started = 0, total, time.perf_counter()
        self._iterable, self._elapsed = iterable, 0.0
        self._progress = current() if iterable is None else None
        self._bar = None
        if type(self).show:
            from tqdm import tqdm

            self._bar = tqdm(iterable, total=total, **kwargs)
        if self._progress is not None and total:
            self._progress.add(total=total)

    def __iter__(self):
        return iter(self._bar if self._bar is not None else self._iterable or ())

    @classmethod
    def drawn(cls, show: bool) -> type:
        """This class, or a subclass that also draws the bar."""
        return type("DrawnProgressBar", (cls,), {"show": True}) if show else cls

    @property
    def format_dict(self) -> dict:
        self._elapsed = max(1e-9, time.perf_counter() - self._started)
        return {"elapsed": self._elapsed}

    @property
    def postfix(self) -> str:
        return ""

    @postfix.setter
    def postfix(self, text: str) -> None:  # vLLM sets "est. speed input: ... toks/s, output: X toks/s"
        m = _OUT_SPEED.search(text or "")
        if m and self._progress is not None:
            self._progress.add(out_tokens=round(float(m.group(1)) * self._elapsed))  # its own elapsed: its total
        if self._bar is not None:
            self._bar.postfix = text

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._progress is not None:
            self._progress.add(done=n)
        if self._bar is not None:
            self._bar.update(n)

    def refresh(self) -> None:
        if self._bar is not None:
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
