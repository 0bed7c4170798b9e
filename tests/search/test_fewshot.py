"""Few-shot demonstrations (pure logic, no engine): the prompt text's demonstrations block, the template
slot, the moves, the pool and the training rows it is kept out of."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from apo_local.run.config import build_config
from apo_local.search.proposers.fewshot import MOVES, demo_move, demo_pool
from apo_local.search.splits import train_rows
from apo_local.support.errors import ApoError
from apo_local.tasks import PromptTemplate, load_task
from apo_local.tasks.demos import join_prompt, split_prompt

DEMOS = [
    {"id": "train-1", "input": "Says taxes\nwent up.", "label": "Yes"},
    {"id": "train-2", "input": "B", "label": "No"},
]
SLOTLESS = "# Task\n{{ instruction }}\n\n# Output format\nAnswer Yes or No as labels.\n\n# Prediction\nText: {{ input }}\nLabel:\n"


def test_a_prompt_text_carries_its_demonstrations_and_reads_back():
    text = join_prompt("Is it a lie?", DEMOS)
    assert text.startswith("Is it a lie?\n\n<demonstrations>\n") and text.endswith("</demonstrations>")
    assert split_prompt(text) == ("Is it a lie?", DEMOS)
    assert join_prompt(*split_prompt(text)) == text
    assert join_prompt("Plain.", []) == "Plain." and split_prompt("Plain.") == ("Plain.", [])
    with pytest.raises(ApoError, match="demonstration 1"):
        split_prompt("x\n\n<demonstrations>\nnot json\n</demonstrations>")


def test_the_builtin_template_renders_as_before_without_demonstrations_and_shows_them_with():
    liar = load_task("liar")
    old = PromptTemplate.from_string(SLOTLESS)
    assert liar.template.takes_demonstrations and not old.takes_demonstrations
    for ex in liar.split("train")[:50]:
        assert liar.template.render(liar.initial_instruction, ex.input, liar.labels) == old.render(
            liar.initial_instruction, ex.input, liar.labels
        )
    shown = liar.template.render(join_prompt("Is it a lie?", DEMOS), "Q", liar.labels)
    assert "# Example\nText: Says taxes\nwent up.\nLabel: Yes\n\n# Example\nText: B\nLabel: No\n\n# Prediction" in shown
    assert shown.index("Is it a lie?") < shown.index("# Example") < shown.index("Text: Q")  # the shared prefix first
    with pytest.raises(ApoError, match="no {{ demonstrations }} slot"):
        old.render(join_prompt("x", DEMOS), "Q", liar.labels)


def test_moves_respect_the_cap_and_never_repeat_a_row():
    pool = [{"id": f"p{i}", "input": str(i), "label": "Yes"} for i in range(5)]
    rng, seen = random.Random(0), set()
    demos: list[dict] = []
    for _ in range(300):
        move, demos = demo_move(demos, pool, 3, rng)
        seen.add(move)
        assert len(demos) <= 3 and len({d["id"] for d in demos}) == len(demos)
        assert all(d in pool for d in demos)
    assert seen == set(MOVES)
    assert demo_move([], pool, 3, random.Random(1))[0] == "add"  # nothing to remove or swap yet
    assert demo_move(pool[:3], pool[:3], 3, random.Random(1))[0] == "remove"  # full, no free row
    assert demo_move([], [], 3, random.Random(1)) is None
    a = [demo_move(DEMOS, pool, 4, random.Random(7)) for _ in range(2)]
    assert a[0] == a[1]  # seeded


def test_the_pool_is_label_balanced_training_rows_kept_out_of_the_search():
    liar = load_task("liar")
    pool = demo_pool(liar, 0, 10)
    assert len(pool) == 10 and {ex.id.split("-")[0] for ex in pool} == {"train"}
    assert sorted(ex.label for ex in pool) == ["No"] * 5 + ["Yes"] * 5
    assert (
        [ex.id for ex in demo_pool(liar, 0, 10)] == [ex.id for ex in pool] != [ex.id for ex in demo_pool(liar, 1, 10)]
    )
    cfg = build_config({"search": {"proposer": "fewshot"}, "fewshot": {"pool_size": 10}, "train_limit": 100})
    rows = train_rows(liar, cfg)
    assert len(rows) == 100 and not {ex.id for ex in rows} & {ex.id for ex in pool}
    plain = train_rows(liar, build_config({"evaluation": {"validation_split": "none"}}))
    assert len(plain) == len(liar.split("train"))  # other proposers: every training row, as before
    from apo_local.search.splits import validation_rows

    both = build_config({"search": {"proposer": "fewshot"}, "fewshot": {"pool_size": 10}})
    val = {ex.id for ex in validation_rows(liar, both)}
    assert val and not val & {ex.id for ex in pool}  # validation rows never double as demonstrations
    assert not (val | {ex.id for ex in pool}) & {ex.id for ex in train_rows(liar, both)}


def test_fewshot_knobs_belong_to_the_fewshot_proposers():
    cfg = build_config(
        {"search": {"proposer": "instruction+fewshot"}, "fewshot": {"max_demos": 2}, "protegi": {"n_gradients": 1}}
    )
    assert cfg.fewshot.max_demos == 2 and cfg.protegi.n_gradients == 1
    with pytest.raises(ApoError, match="fewshot.max_demos: not used by proposer protegi"):
        build_config({"fewshot": {"max_demos": 2}})
    with pytest.raises(ApoError, match="protegi.n_gradients: not used by proposer fewshot"):
        build_config({"search": {"proposer": "fewshot"}, "protegi": {"n_gradients": 1}})
    from apo_local.run.config import flag_names

    assert flag_names()["fewshot.max_demos"] == "fewshot-max-demos"


def test_shipped_fewshot_configs_load():
    root = Path(__file__).resolve().parents[2] / "configs"
    from apo_local.run.config import load_config

    assert load_config(root / "fewshot.yaml").search.proposer == "fewshot"
    assert load_config(root / "instruction+fewshot.yaml").search.proposer == "instruction+fewshot"
