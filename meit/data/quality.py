"""Signal and image quality checks: is this input plausibly an ECG, and what looks wrong with it?

`check_signal` looks at a (12, T) signal in mV, `check_image` at an image tensor; both return a `Quality` whose
`warnings` name each problem (`reason`, `detail`) and whose `refused` is set when the input cannot be an ECG at all
(every lead flat, every lead noise-like, an image below `MIN_IMAGE_SIDE`). `meit.report` prints the warnings and
refuses what is refused. Thresholds (module constants, documented in docs/RELIABILITY.md) were set so that the real
PTB-XL fixture record, the MIMIC-layout test record and synthetic records of both formats pass without a warning,
while random bytes under a valid header, flat and near-flat signals and tiny images are caught.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from meit.data.measure import r_peaks
from meit.data.records import STANDARD_LEADS
from meit.util.errors import UserFacingError

FLAT_MV = 0.01
"""A lead whose robust range (0.5th to 99.5th percentile) is below this many mV is flat (a lead-off electrode)."""
MAX_AMPLITUDE_MV = 10.0
"""A lead whose 99th percentile of |x - median| exceeds this many mV is out of an ECG's range (wrong units, or
not an ECG)."""
NOISE_FLATNESS = 0.6
"""Spectral flatness (geometric / arithmetic mean of the Welch PSD from 0.5 Hz to `SPECTRUM_TOP_HZ`) above which a
lead is noise-like: white noise gives ~0.95, ECG leads at most 0.44 (a low-voltage lead III of a synthetic record;
the real PTB-XL record 0.30). Measured at the record's own rate: upsampled noise is not flat."""
SPECTRUM_TOP_HZ = 100.0
"""Top of the band the flatness is measured on (or the Nyquist frequency, if lower)."""
MAX_HIGH_FREQUENCY_SHARE = 0.6
"""A lead with more than this share of its power above `HIGH_FREQUENCY_HZ` is noise-like (random bytes at 500 Hz:
~0.85; ECG leads at most 0.44, a low-voltage lead under electrode noise; the real PTB-XL record 0.01)."""
HIGH_FREQUENCY_HZ = 40.0
"""Where an ECG's power has all but ended (the QRS complex has little energy above 40 Hz)."""
HEART_RATE_BPM = (25.0, 250.0)
"""The heart rates taken as plausible (neurokit2 R peaks, `meit.data.measure.r_peaks`)."""
RATE_LEADS = ("II", "V5", "I", "V2", "aVF")
"""Leads tried in turn for the heart rate."""
MIN_IMAGE_SIDE = 64
"""Images with a side shorter than this many pixels are refused: twelve leads cannot be drawn on them."""
SMALL_IMAGE_SIDE = 200
"""Images with a side shorter than this many pixels get a warning (the traces are barely resolved)."""
CONSTANT_IMAGE_STD = 0.01
"""An image whose grey levels vary less than this (standard deviation, 0..1 scale) is near-constant: no traces."""


@dataclass(frozen=True)
class QualityWarning:
    """One problem found in an input: `reason` is a short key, `detail` says what was measured."""

    reason: str
    detail: str


@dataclass
class Quality:
    """The outcome of a quality check.

    Attributes:
        warnings: every problem found, in the order checked.
        refused: the input cannot be an ECG (the reason is among the warnings; see `refusal`).
        refusal: why it was refused, in words ("" when not refused).
    """

    warnings: list[QualityWarning] = field(default_factory=list)
    refused: bool = False
    refusal: str = ""

    @property
    def ok(self) -> bool:
        """No warnings at all."""
        return not self.warnings

    def as_dict(self) -> dict:
        """`{"ok": bool, "warnings": [{"reason", "detail"}, ...]}` (the `quality` field of `meit.report --json`)."""
        return {"ok": self.ok, "warnings": [{"reason": w.reason, "detail": w.detail} for w in self.warnings]}

    def add(self, reason: str, detail: str) -> None:
        """Records one warning."""
        self.warnings.append(QualityWarning(reason, detail))

    def refuse(self, reason: str, detail: str) -> None:
        """Records a warning that makes the input unusable."""
        self.add(reason, detail)
        self.refused, self.refusal = True, detail


def _lead_list(names: Sequence[str]) -> str:
    return f"{len(names)} lead(s): {', '.join(names)}"


def spectral_features(signal: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-lead spectral flatness and share of power above `HIGH_FREQUENCY_HZ` (Welch PSD from 0.5 Hz on).

    Args:
        signal: (n_leads, T) in mV.
        fs: sampling rate in Hz.

    Returns:
        (flatness, high-frequency share), each shaped (n_leads,); a lead without power gets 0 for both.
    """
    from scipy.signal import welch

    centred = signal - np.median(signal, axis=1, keepdims=True)
    freqs, psd = welch(centred, fs=fs, nperseg=min(signal.shape[1], int(2 * fs)), axis=1)
    psd, freqs = psd[:, freqs >= 0.5] + 1e-20, freqs[freqs >= 0.5]
    total = psd.sum(axis=1)
    band = psd[:, freqs <= SPECTRUM_TOP_HZ]
    flatness = np.exp(np.log(band).mean(axis=1)) / band.mean(axis=1)
    high = psd[:, freqs > HIGH_FREQUENCY_HZ].sum(axis=1) / total
    silent = total <= 1e-18 * psd.shape[1]
    return np.where(silent, 0.0, flatness), np.where(silent, 0.0, high)


def check_signal(signal: np.ndarray, fs: float, leads: Sequence[str] = STANDARD_LEADS,
                 heart_rate: bool = True) -> Quality:
    """Quality of one ECG signal: flat leads, amplitude range, spectrum, heart rate.

    Refused: every lead flat, or every non-flat lead noise-like (random bytes under a valid header decode to
    that). Warned: some flat leads (named), leads out of the mV range, noise-like leads, a heart rate outside
    `HEART_RATE_BPM` or none found.

    Args:
        signal: (12, T) signal in mV (trailing zero padding should be cut off first).
        fs: sampling rate in Hz.
        leads: lead names, in the signal's row order.
        heart_rate: also measure the heart rate (neurokit2; needs the 12 standard leads).

    Returns:
        The `Quality` (its warnings in the order: flat, amplitude, spectrum, heart rate).
    """
    quality = Quality()
    signal = np.nan_to_num(np.asarray(signal, dtype=np.float64))
    low, high = np.percentile(signal, [0.5, 99.5], axis=1)
    flat = (high - low) < FLAT_MV
    if flat.all():
        quality.refuse("flat_leads", f"all {len(leads)} leads are flat (range < {FLAT_MV} mV): not an ECG")
        return quality
    if flat.any():
        quality.add("flat_leads", f"{_lead_list([n for n, f in zip(leads, flat) if f])} flat "
                    f"(range < {FLAT_MV} mV)")
    live = ~flat
    deviation = np.percentile(np.abs(signal - np.median(signal, axis=1, keepdims=True)), 99, axis=1)
    loud = live & (deviation > MAX_AMPLITUDE_MV)
    if loud.any():
        quality.add("amplitude", f"{_lead_list([n for n, f in zip(leads, loud) if f])} beyond ±{MAX_AMPLITUDE_MV:g} "
                    f"mV (largest {deviation.max():.1f} mV): wrong units or not an ECG")
    flatness, high_share = spectral_features(signal, fs)
    noisy = live & ((flatness > NOISE_FLATNESS) | (high_share > MAX_HIGH_FREQUENCY_SHARE))
    if noisy.any():
        detail = (f"{_lead_list([n for n, f in zip(leads, noisy) if f])} noise-like (spectral flatness up to "
                  f"{flatness[noisy].max():.2f}, {high_share[noisy].max():.0%} of the power above "
                  f"{HIGH_FREQUENCY_HZ:g} Hz)")
        if noisy.sum() == live.sum():
            quality.refuse("implausible_spectrum", f"every lead is noise-like, not an ECG: {detail}")
            return quality
        quality.add("implausible_spectrum", detail)
    if heart_rate:
        _check_heart_rate(quality, signal, fs)
    return quality


def heart_rate_bpm(signal: np.ndarray, fs: float, leads: Sequence[str] = RATE_LEADS) -> float | None:
    """The heart rate (60 / median RR) from the first of `leads` whose R peaks give a plausible rate.

    Lead II alone misses the beats of some real rhythms (atrial flutter waves dominate it), hence the fallbacks.

    Returns:
        The rate in bpm; the first lead's rate when no lead gives a plausible one; None when no lead has 3 beats.
    """

    low, high = HEART_RATE_BPM
    first = None
    for lead in leads:
        try:
            peaks = r_peaks(signal, fs, lead)
        except (ValueError, IndexError):  # neurokit2 fails on flat or too-short leads
            continue
        if len(peaks) < 3:
            continue
        rate = float(60.0 * fs / np.median(np.diff(peaks)))
        if low <= rate <= high:
            return rate
        first = rate if first is None else first
    return first


def _check_heart_rate(quality: Quality, signal: np.ndarray, fs: float) -> None:
    rate = heart_rate_bpm(signal, fs)
    low, high = HEART_RATE_BPM
    if rate is None:
        quality.add("heart_rate", f"no heartbeat found (fewer than 3 R peaks in leads {', '.join(RATE_LEADS)})")
    elif not low <= rate <= high:
        quality.add("heart_rate", f"heart rate {rate:.0f} bpm is outside {low:g}..{high:g} bpm")


def check_image(image: np.ndarray, original_size: tuple[int, int] | None = None) -> Quality:
    """Quality of one ECG image: its size and whether it shows anything.

    Args:
        image: (3, H, W) or (H, W) array or tensor with values in [0, 1].
        original_size: (H, W) of the file before any resizing (default: the array's own size).

    Returns:
        The `Quality`: refused below `MIN_IMAGE_SIDE`, warned below `SMALL_IMAGE_SIDE` or when near-constant.
    """
    quality = Quality()
    pixels = np.asarray(image, dtype=np.float32)
    height, width = original_size or pixels.shape[-2:]
    if min(height, width) < MIN_IMAGE_SIDE:
        quality.refuse("tiny_image", f"image is {height}x{width} pixels (HxW); an ECG page needs at least "
                       f"{MIN_IMAGE_SIDE} on each side")
        return quality
    if min(height, width) < SMALL_IMAGE_SIDE:
        quality.add("small_image", f"image is {height}x{width} pixels (HxW), below {SMALL_IMAGE_SIDE} on a side: "
                    "the traces are barely resolved")
    grey = pixels.mean(axis=0) if pixels.ndim == 3 else pixels
    if float(grey.std()) < CONSTANT_IMAGE_STD:
        quality.add("constant_image", f"image is near-constant (grey-level standard deviation {grey.std():.4f} < "
                    f"{CONSTANT_IMAGE_STD}): no traces visible")
    return quality


class InputQualityError(UserFacingError):
    """An input that cannot be an ECG (every lead flat or noise-like, an image too small to hold one)."""
