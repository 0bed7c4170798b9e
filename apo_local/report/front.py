"""The report's length view: each round's (prompt tokens, training estimate) points and their Pareto
front, recorded by length-aware selection (``selection.length_objective``) in the history, and the
prompt the ``shortest-within-ci`` pick selected."""

from __future__ import annotations

from matplotlib.figure import Figure

from apo_local.support.figures import png


def length_front(results: dict | None) -> dict | None:
    """Per round: points [(id, estimate, tokens)], front ids, beam ids; the picked prompt; None if not recorded."""
    if not results:
        return None
    rounds = []
    for h in results.get("history", []):
        length = (h.get("selection") or {}).get("length")
        if length:
            rounds.append(
                {
                    "round": h["round"],
                    "objective": length["objective"],
                    "points": length["points"],
                    "front": set(length["front"]),
                    "beam": {b[0] for b in h.get("beam", [])},
                }
            )
    if not rounds:
        return None
    pick = results.get("pick") or {}
    return {"rounds": rounds, "selected": pick.get("selected_id"), "rule": pick.get("rule")}


def front_figure(d: dict) -> Figure:
    fig = Figure(figsize=(8, 4.8), layout="constrained")
    ax = fig.subplots()
    last = d["rounds"][-1]
    for r in d["rounds"][:-1]:
        ax.scatter([p[2] for p in r["points"]], [p[1] for p in r["points"]], s=12, color="#dddddd", zorder=1)
    pts = last["points"]
    ax.scatter([p[2] for p in pts], [p[1] for p in pts], s=22, color="#999999", label="candidates", zorder=2)
    front = sorted((p for p in pts if p[0] in last["front"]), key=lambda p: p[2])
    ax.step(
        [p[2] for p in front],
        [p[1] for p in front],
        where="post",
        color="#1f77b4",
        lw=1.5,
        label="Pareto front",
        zorder=3,
    )
    beam = [p for p in pts if p[0] in last["beam"]]
    ax.scatter(
        [p[2] for p in beam],
        [p[1] for p in beam],
        s=60,
        facecolors="none",
        edgecolors="#2ca02c",
        lw=2,
        label="beam",
        zorder=4,
    )
    sel = [p for p in pts if p[0] == d["selected"]]
    if sel:
        ax.scatter(
            [sel[0][2]], [sel[0][1]], marker="*", s=220, color="#d62728", zorder=5, label=f"selected ({d['rule']})"
        )
    ax.set_xlabel("prompt tokens (rendered, empty input)")
    ax.set_ylabel("train estimate")
    ax.set_title(
        f"Score vs prompt length, round {last['round']} ({last['objective']}; earlier rounds grey)", fontsize=10
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return fig


def front_plot(d: dict) -> bytes:
    return png(front_figure(d))
