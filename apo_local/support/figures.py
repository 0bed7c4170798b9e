"""Figures as PNG bytes: matplotlib Figure objects rendered by the Agg canvas (no pyplot, no display).

The one place plots are rendered, shared by ``report/`` and ``sweep/`` (the optimizer-size plot).
"""

from __future__ import annotations

import io

DPI = 100


def png(fig) -> bytes:
    """``fig`` (a ``matplotlib.figure.Figure``) as PNG bytes; no software tag, so same data, same bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()
