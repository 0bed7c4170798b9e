"""What a run returns and writes as ``results.json``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class RunResult:
    metric: str
    initial_prompt: str
    best_prompt: str  # best beam prompt on the test split ("max-pooled", as ProTeGi reports): optimistic
    selected_prompt: str  # the prompt the search selected without the test split (the one to deploy): the best
    # final beam prompt on the validation rows, or without validation rows the selection's first (top estimate)
    initial_test: dict  # *_test: metrics, distributions, confusion and "ci" (95% bootstrap intervals over rows)
    best_test: dict
    selected_test: dict
    beam: list[dict]
    rounds_completed: int
    stop_reason: str  # "completed" or "budget: <cap> (<value>) reached"
    usage: dict  # by role: calls, prompts, input_tokens, output_tokens (identical on resume)
    faults: dict  # counted fallbacks: parse failures, rejected candidates, ...
    history: list[dict] = field(default_factory=list)  # per round: beam estimates (and test, if asked)
    time: dict = field(default_factory=dict)  # wall seconds, by role, cache hits (vary across runs)
    selected_by: str = "selection estimate"  # how selected_prompt was chosen
    selected_vs_initial: dict = field(default_factory=dict)  # paired test statistics (search.headline)
    pick: dict | None = None  # selection.pick other than "estimate": the rule and the beam it chose from

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["pick"] is None:
            del d["pick"]
        return d
