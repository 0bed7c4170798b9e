"""Seeded random streams: every draw is derived from (seed, round, purpose), never from shared state,
so a resumed run draws exactly what an uninterrupted run drew."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Streams:
    seed: int
    round: int

    def _key(self, purpose: tuple) -> str:
        return "|".join(map(str, (self.seed, self.round, *purpose)))

    def rng(self, *purpose) -> random.Random:
        return random.Random(self._key(purpose))

    def request_seed(self, *purpose) -> int:
        """A 32-bit engine request seed for ``purpose``."""
        return int.from_bytes(hashlib.sha256(self._key(purpose).encode()).digest()[:4], "little")


def seeded_order_key(seed: int, text: str) -> str:
    """The key of the seeded train-subset order (``train_limit``): stable across processes."""
    return hashlib.sha256(f"{seed}|{text}".encode()).hexdigest()
