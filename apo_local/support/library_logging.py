"""Progress for library use: apo-local logs through Python's ``logging`` (logger ``apo_local``), silent by
default as Python libraries are; ``show_progress()`` prints its lines on stderr the way the CLI does.

    import apo_local as apo
    apo.show_progress()
"""

from __future__ import annotations

import logging
import sys

LOGGER = "apo_local"


class _Marked(logging.StreamHandler):
    """The handler ``show_progress`` adds (so a second call replaces it rather than doubling every line)."""


def show_progress(level: int = logging.INFO, stream=None) -> logging.Logger:
    """Send the ``apo_local`` logger's lines at ``level`` and above to ``stream`` (stderr): the pre-run estimate,
    model preparation and loading, engine calls still running, warnings. Calling it again changes the level."""
    logger = logging.getLogger(LOGGER)
    for h in [h for h in logger.handlers if isinstance(h, _Marked)]:
        logger.removeHandler(h)
    handler = _Marked(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False  # not twice when the application also logs to stderr
    return logger
