"""A candidate prompt (its editable instruction) and where it came from."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field


def candidate_id(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]


@dataclass
class Candidate:
    text: str  # the instruction section (the only part of the template that is optimized)
    round: int  # round that created it (0 = initial)
    operator: str  # initial | edit | paraphrase | ... (what made it)
    parent: str | None = None  # id of the candidate it was derived from
    gradient: str | None = None  # the textual gradient (reason / feedback) behind it, if any
    critique: str | None = None  # three-stage only: the critique of the outputs the feedback came from
    id: str = field(default="")
    estimate: float | None = None  # bandit estimate in the round it was last selected on
    pulls: int = 0
    status: str = "new"  # new | kept | dropped: <reason> | rejected: <reason>

    def __post_init__(self) -> None:
        self.id = self.id or candidate_id(self.text)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Candidate":
        return cls(**d)
