"""Number formatting and Markdown tables for results.md (also used by the sweep report page)."""

from __future__ import annotations

import math
from typing import Any

# Column headers in results.md and on the report page.
SHORT = {
    "test_initial": "test initial",
    "test_constant": "test constant",
    "test_best": "test best (picked on test)",
    "test_selected": "test selected",
    "test_selected_ci": "95% CI (selected)",
    "test_gain": "gain (selected - initial)",
    "target_calls": "T calls",
    "target_prompts": "T prompts",
    "target_input_tokens": "T in tok",
    "target_output_tokens": "T out tok",
    "optimizer_calls": "O calls",
    "optimizer_prompts": "O prompts",
    "optimizer_input_tokens": "O in tok",
    "optimizer_output_tokens": "O out tok",
    "optimizer_tokens": "O tokens",
    "target_seconds": "T s",
    "optimizer_seconds": "O s",
    "replies": "O replies",
    "replies_truncated": "truncated",
    "accepted_share": "accepted share",
    "wall_seconds": "wall s",
}


def fmt(v: Any, col: str = "") -> str:
    """Test metrics with 3 decimals, other floats with 1 (thousands separated), big ints separated."""
    if v is None:
        return ""
    if isinstance(v, float):
        if col.startswith("test_") or col in ("accepted_share", "diff"):
            return f"{v:.3f}"
        return f"{v:.1f}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 1000:
        return f"{v:,}"
    return str(v)


def plus_minus(mean: Any, std: Any, col: str = "") -> str:
    """ "mean ± std" ("" for a missing mean)."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return ""
    return f"{fmt(float(mean), col)} ± {fmt(float(std or 0.0), col)}"


def md_table(header: list[str], body: list[list[str]]) -> str:
    def esc(s: Any) -> str:
        return str(s).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in body]
    return "\n".join(lines)
