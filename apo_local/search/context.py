"""What a proposer or an acceptance rule works with in one round: each piece does one job.

``streams`` derives the round's randomness; ``optimizer`` asks the optimizer model and parses its replies;
``feedback`` decides what the optimizer is shown; ``admission`` turns proposals into candidates;
``scorer`` scores prompts with the target. Budget caps are not theirs to check: every engine call asks the
run's budget first (``engine/roles.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from apo_local.engine import Trace
from apo_local.scoring import Scorer
from apo_local.search.admission import Admission
from apo_local.search.feedback import Feedback
from apo_local.search.meta_prompts import MetaPrompts
from apo_local.search.optimizer_calls import OptimizerCalls
from apo_local.search.streams import Streams
from apo_local.tasks import Example, Task


@dataclass
class RoundContext:
    round: int
    seed: int
    task: Task
    train: list[Example]  # the training rows proposers draw from
    selection_train: list[Example]  # the same rows with the labels selection rewards use
    scorer: Scorer
    trace: Trace
    streams: Streams
    optimizer: OptimizerCalls
    feedback: Feedback
    admission: Admission
    meta: MetaPrompts
    beam_size: int
    validation: list[Example] = field(
        default_factory=list
    )  # rows kept apart from training and test (validated acceptance, the final pick)

    def admit(self, proposals, parents):
        return self.admission.admit_and_cap(proposals, parents, self.streams)
