"""The run-size presets (``--preset``): rounds, beam, minibatch, selection budget, test and validation rows.

A method adds its own knobs' sizes in its ``Method.presets`` (``search/proposers/``); loading merges the two
(``run/config.py``)."""

from __future__ import annotations

# Size presets (``--preset``), applied under the config file and the flags: the run's sizes here, the method's
# knobs from its own ``Method.presets``. ``paper`` is the ProTeGi reference (the defaults).
PRESETS: dict[str, dict] = {
    "smoke": {
        "search": {"rounds": 1, "beam_size": 2, "minibatch_size": 8, "max_expansion": 2},
        "selection": {"budget": 32, "batch_size": 8, "arms_per_round": 2},
        "optimizer": {"max_tokens": 96},
        "evaluation": {"test_limit": 16, "validation_rows": 16},
    },
    "demo": {
        "search": {"rounds": 2, "beam_size": 2, "minibatch_size": 16, "max_expansion": 3},
        "selection": {"budget": 128, "batch_size": 16, "arms_per_round": 4},
        "optimizer": {"max_tokens": 200},
        "evaluation": {"test_limit": 100, "validation_rows": 50},
    },
    "paper": {},
}
