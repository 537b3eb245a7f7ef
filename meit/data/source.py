"""`Source`: the usable records of one dataset root plus a signal reader at a chosen rate (what every loader in
`meit.data.ptbxl` / `meit.data.mimic` returns; `meit.data.sources.open_source` picks the loader)."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from meit.data.records import ECGRecord, load_signal


@dataclass
class Source:
    """The usable records of one dataset and how to read their signals.

    Attributes:
        name: "ptbxl" or "mimic".
        root: the dataset root.
        sampling_rate: the rate signals are returned at (Hz).
        records: records whose metadata is valid (their waveforms are checked when read).
        skipped: reason -> number of metadata rows skipped (malformed labels, empty reports, ...).
        repaired: repair -> count (e.g. `non_utf8_lines`; `nan_interpolated` as signals are read).
        metadata_files: the CSVs the records come from (their content is the source fingerprint).
        native_rate: the rate the WFDB files are stored at.
    """

    name: str
    root: Path
    sampling_rate: int
    records: list[ECGRecord]
    skipped: Counter = field(default_factory=Counter)
    repaired: Counter = field(default_factory=Counter)
    metadata_files: tuple[Path, ...] = ()
    native_rate: int = 500
    _fingerprint: str | None = field(default=None, repr=False)

    def read_signal(self, record: ECGRecord, n_samples: int) -> np.ndarray:
        """The record's float32 (12, n_samples) signal in mV at `self.sampling_rate`.

        Raises:
            RecordError: for a missing, corrupt or unusable waveform (see `meit.data.records`).
        """
        loaded = load_signal(record.path, self.sampling_rate, n_samples)
        self.repaired.update(loaded.repairs)
        return loaded.signal

    def fingerprint(self) -> str:
        """A hash of the metadata CSVs' content, the format and the rate: changes when the dataset does."""
        if self._fingerprint is None:
            digest = hashlib.blake2b(f"{self.name}:{self.sampling_rate}".encode(), digest_size=16)
            for path in self.metadata_files:
                digest.update(path.name.encode())
                with open(path, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        digest.update(block)
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def default_n_samples(self) -> int:
        """10 s at the source's rate (both PTB-XL and MIMIC-IV-ECG records are 10 s)."""
        return int(round(10 * self.sampling_rate))
