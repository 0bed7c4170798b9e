"""Persistent result cache: re-runs and resumes cost nothing.

Keys hash the model identity (weights, dtype, context), the engine seed, the operation, its
settings and the exact input. A large call goes to the engine in chunks (``CHUNK`` inputs) and
each chunk's results are written in one transaction when it returns: a killed process leaves whole
chunks or nothing, and memory stays bounded.

Several processes may share one cache file (the workers of a sweep): the database is in WAL mode, a
writer waits up to ``BUSY_MS`` for another's transaction instead of failing with "database is
locked", and each chunk is one short ``BEGIN IMMEDIATE`` transaction (no lost writes).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path

from apo_local.engine.protocol import ChoiceScores, Generation, GenerationRequest

CHUNK = 32_768  # inputs per engine call and per cache transaction
BUSY_MS = 60_000  # how long a writer waits for another process's transaction


def default_cache_path() -> Path:
    root = os.environ.get("APO_LOCAL_CACHE_DIR") or Path.home() / ".cache" / "apo-local"
    return Path(root) / "engine-cache.sqlite"


class ResultCache:
    def __init__(self, path: Path):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)  # private data: user-only from the start
        os.close(fd)
        self.path = path
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=BUSY_MS / 1000)
        self.db.execute(f"PRAGMA busy_timeout={BUSY_MS}")
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # WAL: a commit survives a killed process
        self.db.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, value TEXT NOT NULL)")

    def get_many(self, keys: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            rows = self.db.execute(f"SELECT key, value FROM results WHERE key IN ({','.join('?' * len(chunk))})", chunk)
            found.update(rows.fetchall())
        return found

    def put_many(self, items: dict[str, str]) -> None:
        """One transaction; IMMEDIATE takes the write lock at once, so a busy writer waits (busy timeout)
        rather than failing on a read-to-write upgrade."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany("INSERT OR REPLACE INTO results (key, value) VALUES (?, ?)", items.items())

    def get_identity(self, parts: list) -> dict | None:
        """A model's identity (model id, context length) stored when it last ran with this cache."""
        found = self.get_many([_key("engine-identity", *parts)])
        return json.loads(next(iter(found.values()))) if found else None

    def put_identity(self, parts: list, identity: dict) -> None:
        key = _key("engine-identity", *parts)
        value = json.dumps(identity, sort_keys=True)
        if self.get_many([key]).get(key) != value:
            self.put_many({key: value})

    def close(self) -> None:
        self.db.close()


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _keys_around(head: list, tail: list):
    """``lambda x: _key(*head, x, *tail)`` for string inputs, without re-encoding the fixed parts (same keys)."""
    pre = json.dumps(head, sort_keys=True, ensure_ascii=False)[:-1] + (", " if head else "")
    post = (", " + json.dumps(tail, sort_keys=True, ensure_ascii=False)[1:]) if tail else "]"
    dumps, sha = json.dumps, hashlib.sha256
    return lambda x: sha((pre + dumps(x, ensure_ascii=False) + post).encode()).hexdigest()


_FIELDS: dict[type, tuple[str, ...]] = {}


def _dump(result) -> str:
    """``json.dumps(dataclasses.asdict(result))`` for the flat result types, without asdict's deep copy."""
    names = _FIELDS.get(type(result))
    if names is None:
        names = _FIELDS[type(result)] = tuple(f.name for f in fields(result))
    return json.dumps({n: getattr(result, n) for n in names})


class CachedEngine:
    """Wraps an engine: identical inputs are computed once per call and once ever (on disk)."""

    def __init__(self, engine, cache: ResultCache | None):
        self.inner = engine
        self.cache = cache
        self.model_id = engine.model_id
        self.max_model_len = engine.max_model_len
        self.seed = getattr(getattr(engine, "settings", None), "seed", 0)
        self.hits = 0
        self.misses = 0
        self._token_counts: dict[str, int] = {}

    def count_tokens(self, prompts: Sequence[str]) -> list[int]:
        """Prompt token counts; remembered in memory and on disk (a fully cached job needs no tokenizer)."""
        if len(self._token_counts) > 20_000:  # bounded: a long-lived engine serves many runs
            self._token_counts.clear()
        todo = [p for p in dict.fromkeys(prompts) if p not in self._token_counts]
        if todo and self.cache:
            keys = {p: _key(self.model_id, "count", p) for p in todo}
            stored = self.cache.get_many(list(keys.values()))
            self._token_counts.update({p: int(stored[k]) for p, k in keys.items() if k in stored})
            todo = [p for p in todo if p not in self._token_counts]
        if todo:
            counts = self.inner.count_tokens(todo)
            self._token_counts.update(zip(todo, counts))
            if self.cache:
                self.cache.put_many({_key(self.model_id, "count", p): str(n) for p, n in zip(todo, counts)})
        return [self._token_counts[p] for p in prompts]

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        # A seeded request is reproducible on its own; an unseeded one depends on the engine's seed too.
        # "generate/2": entries carry each sample's finish reason (older ones did not: recomputed once).
        keys = [
            _key(self.model_id, None if r.seed is not None else self.seed, "generate/2", r.prompt, r.settings())
            for r in requests
        ]
        return self._cached(keys, requests, self.inner.generate, _load_generation)

    def score_choices(self, prompts: Sequence[str], choices: Sequence[str]) -> list[ChoiceScores]:
        key = _keys_around([self.model_id, "score"], [list(choices)])
        keys = [key(p) for p in prompts]
        return self._cached(keys, prompts, lambda todo: self.inner.score_choices(todo, choices), _load_scores)

    def _cached(self, keys: list[str], inputs: Sequence, compute: Callable, load: Callable) -> list:
        stored = self.cache.get_many(keys) if self.cache else {}
        missing = {k: x for k, x in zip(keys, inputs) if k not in stored}  # dedupes within the call
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        results = {k: load(json.loads(v)) for k, v in stored.items()}
        del stored
        todo = list(missing.items())
        for start in range(0, len(todo), CHUNK):  # each chunk computed, then written: streamed into the cache
            part = todo[start : start + CHUNK]
            fresh = dict(zip((k for k, _ in part), compute([x for _, x in part])))
            if self.cache:
                self.cache.put_many({k: _dump(r) for k, r in fresh.items()})
            results.update(fresh)
        return [results[k] for k in keys]


def _load_generation(d: dict) -> Generation:
    return Generation(
        tuple(d["texts"]), d["input_tokens"], d["output_tokens"], d.get("error"), tuple(d.get("finish_reasons") or ())
    )  # entries written before finish reasons: unknown


def _load_scores(d: dict) -> ChoiceScores:
    return ChoiceScores(tuple(float(x) for x in d["logprobs"]), d["input_tokens"], d.get("error"))
