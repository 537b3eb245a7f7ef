"""Per-record seeds: one derivation for every seeded per-record draw (test noise, rendered pages, instructions)."""

from __future__ import annotations

import hashlib
from typing import Any


def record_seed(seed: int, *parts: Any) -> int:
    """A stable 63-bit seed from a run seed and any labels (noise kind, level, record id).

    Stable across processes and Python versions (unlike `hash`), so a record gets the same noise or page in
    every run, worker and rank.
    """
    text = ":".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") >> 1
