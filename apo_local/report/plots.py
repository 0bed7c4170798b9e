"""Report plots (matplotlib Figure objects, no pyplot, no display), rendered to PNG by ``apo_local.support.figures``.

Each ``*_plot`` function takes the plain data of ``apo_local.report.data`` and returns PNG bytes;
``score_figure``, ``lineage_figure`` and ``usage_figure`` return the Figure itself (tests read its parts).
"""

from __future__ import annotations

import math

from matplotlib.figure import Figure

from apo_local.support.figures import png as _png

OPERATOR_COLORS = {"initial": "#444444", "edit": "#1f77b4", "paraphrase": "#ff7f0e", "kept": "#2ca02c"}
FATE_EDGE = {"selected": "#d62728", "beam": "#2ca02c"}
ROLE_COLORS = {"target": "#1f77b4", "optimizer": "#ff7f0e"}
UNSCORED = "dropped / rejected (not scored)"
TRAIN_LABEL = "train estimate\n(mean example reward:\nshare of sampled train examples right)"


def is_unscored(fate: str | None) -> bool:
    """A candidate cut before selection scored it ("dropped: ...", "rejected: ...")."""
    return bool(fate) and fate.split(":")[0] in ("dropped", "rejected")


def score_figure(s: dict) -> Figure:
    """Two panels on one round axis: the bandit's train estimates (top) and the test metric (bottom);
    the two are different quantities on different data, so they never share a y axis."""
    fig = Figure(figsize=(8, 6.4), layout="constrained")
    train, test = fig.subplots(2, 1, sharex=True)
    _train_panel(train, s)
    _test_panel(test, s)
    test.set_xlabel("round")
    test.set_xticks(range(1, max(1, s["rounds"]) + 1))
    fig.suptitle("Score per round")
    return fig


def _train_panel(ax, s: dict) -> None:
    if s["candidates"]:
        xs, ys = zip(*s["candidates"])
        ax.scatter(xs, ys, s=18, color="#bbbbbb", label="candidates", zorder=2)
    if s["beam"]:
        xs, ys = zip(*s["beam"])
        ax.scatter(xs, ys, s=34, color="#2ca02c", label="beam", zorder=3)
    if s["best_estimate"]:
        xs, ys = zip(*s["best_estimate"])
        ax.plot(xs, ys, "-", color="#2ca02c", lw=1.5, label="best beam estimate", zorder=3)
    if s["initial_estimate"] is not None:
        ax.axhline(s["initial_estimate"], color="#d62728", ls=":", lw=1.0, label="initial prompt, round-1 estimate")
    ax.set_ylabel(TRAIN_LABEL, fontsize=9)
    ax.set_title("Bandit estimates on train (what the search selects by)", fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")


def _test_panel(ax, s: dict) -> None:
    metric = s["metric"] or "metric"
    if s["test"]:
        xs, ys = zip(*s["test"])
        ax.plot(xs, ys, "o-", color="#9467bd", label=f"best beam prompt, test {metric}", zorder=4)
    if s["initial_test"] is not None:
        ax.axhline(s["initial_test"], color="#d62728", ls="--", lw=1.2, label=f"initial prompt, test {metric}")
    if s["selected_test"] is not None and s["rounds"]:
        ax.scatter(
            [s["rounds"]],
            [s["selected_test"]],
            marker="*",
            s=180,
            color="#d62728",
            zorder=5,
            label=f"selected prompt, test {metric}",
        )
    ax.set_ylabel(f"test {metric}")
    ax.set_title(f"Test {metric} (held-out split; not seen by the search)", fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")
    else:
        ax.text(
            0.5,
            0.5,
            "no test scores yet (run not finished)",
            ha="center",
            va="center",
            transform=ax.transAxes,
            color="#666666",
        )


def score_plot(s: dict) -> bytes:
    return _png(score_figure(s))


def _lineage_positions(nodes: list[dict]) -> tuple[dict, dict, int]:
    """Rounds left to right; a child of a same-round candidate (a paraphrase of an edit) half a step right."""
    by_round: dict[int, list[dict]] = {}
    for n in nodes:
        by_round.setdefault(n["round"], []).append(n)
    pos = {}
    height = max(len(v) for v in by_round.values()) if by_round else 1
    made_in = {n["id"]: n["round"] for n in nodes}
    for r, members in by_round.items():
        members.sort(key=lambda n: (n["parent"] or "", -(n["estimate"] or -1)))
        for i, n in enumerate(members):
            x = r + (0.45 if n["parent"] is not None and made_in.get(n["parent"]) == r else 0.0)
            pos[n["id"]] = (x, (i + 0.5) * height / len(members))
    return pos, by_round, height


def _lineage_edges(ax, nodes: list[dict], pos: dict) -> None:
    for n in nodes:
        if n["parent"] in pos:
            (x0, y0), (x1, y1) = pos[n["parent"]], pos[n["id"]]
            ax.plot(
                [x0, x1],
                [y0, y1],
                ":" if is_unscored(n["fate"]) else "-",
                color=OPERATOR_COLORS.get(n["operator"], "#999999"),
                lw=1.1,
                alpha=0.8,
                zorder=1,
            )
        for r in n["kept_rounds"][-1:]:  # carried over up to round r: a "kept" edge to itself
            x0, y0 = pos[n["id"]]
            ax.annotate(
                "",
                xy=(r, y0),
                xytext=(x0, y0),
                arrowprops=dict(arrowstyle="-", color=OPERATOR_COLORS["kept"], ls=":", lw=1.0),
                zorder=1,
            )


def _lineage_node(ax, n: dict, x: float, y: float) -> None:
    color = OPERATOR_COLORS.get(n["operator"], "#999999")
    if is_unscored(n["fate"]):  # a cross in the operator's colour, no estimate: never scored
        ax.scatter([x], [y], s=55, marker="x", color=color, linewidths=1.6, zorder=3, gid=f"node:{n['id']}")
        label = n["id"][:6] + " " + n["fate"].split(":")[0]
    else:
        ax.scatter(
            [x],
            [y],
            s=60,
            color=color,
            zorder=3,
            gid=f"node:{n['id']}",
            edgecolors=FATE_EDGE.get(n["fate"], "white"),
            linewidths=2.2 if n["fate"] in FATE_EDGE else 0.5,
        )
        label = n["id"][:6] + ("" if n["estimate"] is None else f" {n['estimate']:.2f}")
    ax.annotate(
        label,
        (x, y),
        xytext=(5, 3),
        textcoords="offset points",
        fontsize=7,
        color="#999999" if is_unscored(n["fate"]) else "#333333",
    )


def lineage_figure(nodes: list[dict]) -> Figure:
    """An edge per parent -> child coloured by operator; beam/best ringed; dropped/rejected crossed."""
    pos, by_round, height = _lineage_positions(nodes)
    fig = Figure(figsize=(max(6.0, 2.2 * len(by_round) + 2), max(3.0, min(14.0, 0.32 * height + 1.5))))
    ax = fig.add_subplot()
    _lineage_edges(ax, nodes, pos)
    for n in nodes:
        _lineage_node(ax, n, *pos[n["id"]])
    handles = [ax.scatter([], [], color=c, label=op) for op, c in OPERATOR_COLORS.items()]
    handles += [ax.scatter([], [], color="white", edgecolors=c, linewidths=2, label=f) for f, c in FATE_EDGE.items()]
    handles.append(ax.scatter([], [], marker="x", color="#777777", linewidths=1.6, label=UNSCORED))
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    rounds = sorted(by_round)
    ax.set_xticks(rounds)
    ax.set_xticklabels(["initial" if r == 0 else f"round {r}" for r in rounds])
    ax.set_yticks([])
    ax.set_xlim(min(rounds, default=0) - 0.3, max(rounds, default=0) + 0.9)
    ax.set_title("Candidate lineage (node: id and bandit estimate; ring: final beam / selected; cross: not scored)")
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    return fig


def lineage_plot(nodes: list[dict]) -> bytes:
    return _png(lineage_figure(nodes))


def distribution_plot(cls: dict) -> bytes:
    labels = cls["labels"]
    series = [
        ("true", cls["true"], "#7f7f7f"),
        ("initial prompt", cls["initial"], "#1f77b4"),
        ("selected prompt", cls["selected"], "#ff7f0e"),
    ]
    fig = Figure(figsize=(max(5.0, 1.2 * len(labels) + 3), 3.6))
    ax = fig.add_subplot()
    w = 0.8 / len(series)
    for k, (name, dist, color) in enumerate(series):
        total = sum(dist.values()) or 1
        shares = [dist.get(lab, 0) / total for lab in labels]
        ax.bar([i + (k - 1) * w for i in range(len(labels))], shares, w, label=name, color=color)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels)
    ax.set_ylabel("share of test examples")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title("Predicted vs true label distribution")
    return _png(fig)


def confusion_plot(
    confusion: dict, labels: list[str], title: str = "Confusion matrix (selected prompt, test)"
) -> bytes:
    preds = list(dict.fromkeys([*labels, *(p for row in confusion.values() for p in row)]))
    trues = [t for t in labels if t in confusion] or list(confusion)
    m = [[confusion.get(t, {}).get(p, 0) for p in preds] for t in trues]
    fig = Figure(figsize=(1.1 * len(preds) + 2.5, 0.9 * len(trues) + 1.8))
    ax = fig.add_subplot()
    im = ax.imshow(m, cmap="Blues")
    top = max((v for row in m for v in row), default=0)
    for i, row in enumerate(m):
        for j, v in enumerate(row):
            ax.text(j, i, str(v), ha="center", va="center", color="white" if v > top / 2 else "black")
    ax.set_xticks(range(len(preds)))
    ax.set_xticklabels(preds)
    ax.set_yticks(range(len(trues)))
    ax.set_yticklabels(trues)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(title, fontsize=10)
    return _png(fig)


def usage_figure(rows: list[dict]) -> Figure:
    """Tokens (input + output) and seconds by phase, one bar colour per role."""
    phases = list(dict.fromkeys(r["phase"] for r in rows))
    fig = Figure(figsize=(9, 3.9), layout="constrained")  # constrained: the figure title clears the panel titles
    axes = fig.subplots(1, 2)
    for ax, (title, value) in zip(
        axes,
        (
            ("tokens (input + output)", lambda r: r["input_tokens"] + r["output_tokens"]),
            ("seconds", lambda r: r["seconds"]),
        ),
    ):
        bottom = [0.0] * len(phases)
        for role in ("target", "optimizer"):
            vals = [sum(value(r) for r in rows if r["role"] == role and r["phase"] == ph) for ph in phases]
            ax.bar(range(len(phases)), vals, bottom=bottom, label=role, color=ROLE_COLORS[role])
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.set_xticks(range(len(phases)))
        ax.set_xticklabels(phases, rotation=30, ha="right")
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Engine work by role and phase")
    return fig


def usage_plot(rows: list[dict]) -> bytes:
    return _png(usage_figure(rows))


def prompt_length_plot(rows: list[dict]) -> bytes:
    fig = Figure(figsize=(6, 3.2))
    ax = fig.add_subplot()
    xs = [r["round"] for r in rows]
    ax.fill_between(
        xs,
        [r["words_min"] for r in rows],
        [r["words_max"] for r in rows],
        alpha=0.25,
        color="#1f77b4",
        label="beam min-max",
    )
    ax.plot(xs, [r["words_mean"] for r in rows], "o-", color="#1f77b4", label="beam mean")
    ax.set_xticks(xs)
    ax.set_xlabel("round")
    ax.set_ylabel("words")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Prompt length per round (beam)")
    return _png(fig)


def sweep_cells_plot(rows: list[dict]) -> bytes:
    """Initial vs selected prompt's test metric per cell (selected without the test split; best of beam for
    cells from before it was recorded)."""
    done = [r for r in rows if r.get("kind") == "cell" and r.get("test_best") is not None]
    chosen = [r["test_selected"] if r.get("test_selected") is not None else r["test_best"] for r in done]
    fig = Figure(figsize=(max(6.0, 0.6 * len(done) + 3), 4))
    ax = fig.add_subplot()
    xs = range(len(done))
    ax.bar([x - 0.2 for x in xs], [r["test_initial"] for r in done], 0.4, label="initial prompt", color="#1f77b4")
    ax.bar([x + 0.2 for x in xs], chosen, 0.4, label="selected prompt", color="#ff7f0e")
    ax.set_xticks(list(xs))
    ax.set_xticklabels([r["cell"].rsplit("-", 1)[0][:28] for r in done], rotation=30, ha="right", fontsize=8)
    metric = done[0]["metric"] if done else "metric"
    ax.set_ylabel(f"test {metric}")
    lo = min([r["test_initial"] for r in done] + chosen, default=0)
    ax.set_ylim(max(0.0, math.floor(lo * 10) / 10 - 0.1), None)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Test metric per cell")
    return _png(fig)
