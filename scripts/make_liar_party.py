"""Build the built-in ``liar-party`` task from the bundled Liar rows (apo_local/tasks/builtin/liar/).

Same PolitiFact statements, another question: was the statement made by a Republican or a Democrat? The
input keeps the statement and its context; the job title, state and party lines are dropped (the party is
the label; a job title such as "U.S. Senator" with a state would let a model look the speaker up). Rows of
other parties (none, organization, independent, ...) are left out. Deterministic: re-running writes the
same files.

    .venv/bin/python scripts/make_liar_party.py
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "apo_local" / "tasks" / "builtin" / "liar"
DST = ROOT / "apo_local" / "tasks" / "builtin" / "liar-party"
PARTIES = {"republican": "Republican", "democrat": "Democrat"}
_FIELD = re.compile(r"^(Statement|Job title|State|Party|Context): ?(.*)$")


def convert(line: str) -> dict | None:
    fields = dict(m.groups() for m in map(_FIELD.match, json.loads(line)["text"].split("\n")) if m)
    party = PARTIES.get(fields.get("Party", "").strip().lower())
    if party is None or not fields.get("Statement", "").strip():
        return None
    return {
        "text": f"Statement: {fields['Statement'].strip()}\nContext: {fields.get('Context', '').strip()}",
        "label": party,
    }


def main() -> None:
    DST.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        rows = [r for r in map(convert, (SRC / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()) if r]
        (DST / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        counts = {p: sum(r["label"] == p for r in rows) for p in PARTIES.values()}
        print(f"{split}: {len(rows)} rows {counts}")


if __name__ == "__main__":
    main()
