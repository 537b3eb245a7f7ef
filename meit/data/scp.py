"""The 71 SCP-ECG statements of PTB-XL (scp_statements.csv, PTB-XL 1.0.3, CC BY 4.0)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

SCP_STATEMENTS_CSV = Path(__file__).parents[1] / "resources" / "scp_statements.csv"
SUPERCLASSES = ("NORM", "MI", "STTC", "CD", "HYP")


@dataclass(frozen=True)
class SCPStatement:
    """One row of scp_statements.csv."""

    code: str
    description: str
    diagnostic: bool
    form: bool
    rhythm: bool
    diagnostic_class: str | None
    diagnostic_subclass: str | None


@lru_cache(maxsize=1)
def scp_statements() -> dict[str, SCPStatement]:
    """All 71 statements keyed by SCP code, in file order."""
    with open(SCP_STATEMENTS_CSV, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    return {
        row[""]: SCPStatement(
            code=row[""],
            description=row["description"],
            diagnostic=row["diagnostic"] == "1.0",
            form=row["form"] == "1.0",
            rhythm=row["rhythm"] == "1.0",
            diagnostic_class=row["diagnostic_class"] or None,
            diagnostic_subclass=row["diagnostic_subclass"] or None,
        )
        for row in rows
    }


def superclasses(codes: list[str] | tuple[str, ...] | set[str]) -> list[str]:
    """Diagnostic superclasses (NORM/MI/STTC/CD/HYP) of `codes`, sorted; unknown and non-diagnostic codes add none."""
    table = scp_statements()
    return sorted({table[c].diagnostic_class for c in codes if c in table and table[c].diagnostic_class})
