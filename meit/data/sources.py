"""Datasets by name: `open_source` opens a dataset root as a `meit.data.source.Source`.

`open_source("ptbxl" | "mimic", root, sampling_rate)` is the one entry point; the formats live in
`meit.data.ptbxl` and `meit.data.mimic`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from meit.data.mimic import load_mimic
from meit.data.ptbxl import load_ptbxl
from meit.data.source import Source

LOADERS: dict[str, Callable[[Path, int | None], Source]] = {"mimic": load_mimic, "ptbxl": load_ptbxl}
"""Dataset name -> loader of its real on-disk format."""
SOURCES = tuple(LOADERS)


def open_source(name: str, root: str | Path, sampling_rate: int | None = None) -> Source:
    """Opens a dataset root in its real on-disk format.

    Args:
        name: "ptbxl" or "mimic".
        root: the dataset root (the folder holding the metadata CSVs).
        sampling_rate: rate to return signals at; None picks the dataset's native rate
            (PTB-XL: 500 Hz if records500/ exists, else 100 Hz; MIMIC: 500 Hz).

    Returns:
        The Source.

    Raises:
        ValueError: for an unknown name.
        RecordError: for a missing/unparsable metadata CSV or missing waveform folder.
    """
    if name not in LOADERS:
        raise ValueError(f"unknown dataset: {name}; choose from {', '.join(SOURCES)}")
    return LOADERS[name](Path(root), sampling_rate)
