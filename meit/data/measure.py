"""Fast global measurements of a 12-lead ECG (rate, rhythm regularity, intervals, axis, voltages).

R peaks come from neurokit2 on a cleaned lead II; everything else is measured here on the median beat of
all twelve leads: QRS onset/offset where the spatial velocity (sum of absolute slopes over the leads) leaves
and rejoins its baseline, the P wave as the largest spatial-magnitude bump before the QRS. These are the
numbers `eval.grounding` checks report claims against; values that cannot be measured are None.
"""

from __future__ import annotations

import numpy as np
from neurokit2 import ecg_clean, ecg_peaks

from meit.data.records import STANDARD_LEADS

LEAD_INDEX = {name: i for i, name in enumerate(STANDARD_LEADS)}
MIMIC_MISSING = 29999  # MIMIC-IV-ECG's value for an unmeasurable interval or axis
_PRE_S, _POST_S = 0.35, 0.40  # median-beat window around each R peak
_MIN_P_MV = 0.03  # spatial P-wave height below which no P wave (and no PR interval) is reported
MEASUREMENT_KEYS = ("heart_rate_bpm", "rr_irregularity", "qrs_ms", "pr_ms", "qrs_axis_deg",
                    "max_qrs_amplitude_mv", "sokolow_lyon_mv", "cornell_mv", "max_limb_qrs_mv")


def r_peaks(signal: np.ndarray, fs: float, lead: str = "II") -> np.ndarray:
    """Sample indices of the R peaks neurokit2 finds on one cleaned lead of a (12, T) signal (default lead II)."""
    trace = np.nan_to_num(signal[LEAD_INDEX[lead]].astype(np.float64))
    _, info = ecg_peaks(ecg_clean(trace, sampling_rate=int(fs)), sampling_rate=int(fs))
    return np.asarray(info["ECG_R_Peaks"], dtype=int)


def _median_beat(signal: np.ndarray, peaks: np.ndarray, fs: float) -> tuple[np.ndarray, int] | None:
    pre, post = int(_PRE_S * fs), int(_POST_S * fs)
    keep = peaks[(peaks >= pre) & (peaks + post < signal.shape[1])]
    if len(keep) < 2:
        return None
    idx = keep[:, None] + np.arange(-pre, post)[None, :]
    beats = np.nan_to_num(signal[:, idx])  # (12, beats, window)
    beats -= np.median(beats, axis=2, keepdims=True)
    return np.median(beats, axis=1), pre


def _qrs_bounds(beat: np.ndarray, r: int, fs: float) -> tuple[int, int]:
    velocity = np.abs(np.diff(beat, axis=1)).sum(axis=0)
    lo, hi = max(r - int(0.10 * fs), 1), min(r + int(0.14 * fs), len(velocity) - 1)
    floor = np.percentile(velocity, 20)
    # first / last fast sample near the R peak: the apex and notches inside the QRS are slow too
    fast = np.flatnonzero(velocity[lo:hi] > floor + 0.10 * (velocity[lo:hi].max() - floor))
    return lo + int(fast[0]), lo + int(fast[-1]) + 1


def _pr_samples(beat: np.ndarray, onset: int, fs: float) -> int | None:
    start = max(onset - int(0.25 * fs), 0)
    stop = onset - int(0.03 * fs)
    if stop - start < 3:
        return None
    seg = beat[:, start:stop] - beat[:, onset:onset + 1]
    magnitude = np.sqrt((seg ** 2).sum(axis=0))
    peak = int(np.argmax(magnitude))
    if magnitude[peak] < _MIN_P_MV or peak == 0:  # at the window edge: the previous T wave, not a P wave
        return None
    p_on = peak
    while p_on > 0 and magnitude[p_on - 1] > 0.25 * magnitude[peak]:
        p_on -= 1
    return onset - (start + p_on)


def _voltages(beat: np.ndarray, onset: int, offset: int) -> dict[str, float]:
    qrs = beat[:, onset:offset + 1] - beat[:, onset:onset + 1]
    ptp = qrs.max(axis=1) - qrs.min(axis=1)
    r_wave, s_wave = qrs.max(axis=1), -qrs.min(axis=1)
    li = LEAD_INDEX
    net = qrs.sum(axis=1)
    return {
        "qrs_axis_deg": float(np.degrees(np.arctan2(net[li["aVF"]], net[li["I"]]))),
        "max_qrs_amplitude_mv": float(ptp.max()),
        "sokolow_lyon_mv": float(s_wave[li["V1"]] + max(r_wave[li["V5"]], r_wave[li["V6"]])),
        "cornell_mv": float(r_wave[li["aVL"]] + s_wave[li["V3"]]),
        "max_limb_qrs_mv": float(ptp[:6].max()),
    }


def measure_ecg(signal: np.ndarray, fs: float) -> dict:
    """Rate, rhythm regularity, QRS and PR duration, frontal QRS axis and QRS voltages of one ECG.

    Args:
        signal: (12, T) signal in mV, leads I, II, III, aVR, aVL, aVF, V1-V6 (NaN read as 0).
        fs: Sampling rate in Hz.

    Returns:
        ``heart_rate_bpm``, ``rr_irregularity`` (median absolute successive RR difference / median RR),
        ``qrs_ms``, ``pr_ms``, ``qrs_axis_deg``, ``max_qrs_amplitude_mv``, ``sokolow_lyon_mv`` (S V1 +
        max R V5/V6), ``cornell_mv`` (R aVL + S V3), ``max_limb_qrs_mv`` (largest peak-to-peak QRS in
        I-aVF) and ``source`` = "neurokit2"; None where not measurable (fewer than 3 beats, no P wave).
    """
    if signal.ndim != 2 or signal.shape[0] != 12:
        raise ValueError(f"measure_ecg needs a (12, T) signal, got shape {signal.shape}")
    out: dict = dict.fromkeys(MEASUREMENT_KEYS)
    out["source"] = "neurokit2"
    try:
        peaks = r_peaks(signal, fs)
    except (ValueError, IndexError):  # neurokit2 fails on flat or too-short signals
        return out
    if len(peaks) < 3:
        return out
    rr = np.diff(peaks) / fs
    out["heart_rate_bpm"] = float(60.0 / np.median(rr))
    out["rr_irregularity"] = float(np.median(np.abs(np.diff(rr))) / np.median(rr))
    median = _median_beat(signal.astype(np.float64), peaks, fs)
    if median is None:
        return out
    beat, r = median
    onset, offset = _qrs_bounds(beat, r, fs)
    out["qrs_ms"] = float((offset - onset) * 1000.0 / fs)
    pr = _pr_samples(beat, onset, fs)
    out["pr_ms"] = None if pr is None else float(pr * 1000.0 / fs)
    out.update(_voltages(beat, onset, offset))
    return out


def _machine_value(row: dict, key: str) -> float | None:
    value = row.get(key)
    if value in (None, ""):
        return None
    number = float(value)
    return None if not np.isfinite(number) or number >= MIMIC_MISSING else number


def measurements_from_machine(row: dict) -> dict:
    """Measurements from one MIMIC-IV-ECG machine_measurements.csv row, in `measure_ecg`'s keys.

    Args:
        row: The csv row (``rr_interval``, ``p_onset``, ``qrs_onset``, ``qrs_end``, ``qrs_axis``; ms / degrees;
            29999 means not measured).

    Returns:
        ``heart_rate_bpm``, ``pr_ms``, ``qrs_ms``, ``qrs_axis_deg`` (None where missing), the other keys None,
        ``source`` = "machine_measurements".
    """
    out: dict = dict.fromkeys(MEASUREMENT_KEYS)
    out["source"] = "machine_measurements"
    rr = _machine_value(row, "rr_interval")
    p_on, q_on, q_end = (_machine_value(row, k) for k in ("p_onset", "qrs_onset", "qrs_end"))
    out["heart_rate_bpm"] = 60000.0 / rr if rr else None
    out["pr_ms"] = q_on - p_on if q_on is not None and p_on is not None else None
    out["qrs_ms"] = q_end - q_on if q_end is not None and q_on is not None else None
    out["qrs_axis_deg"] = _machine_value(row, "qrs_axis")
    return out


def with_machine_measurements(measured: dict, row: dict | None) -> dict:
    """`measure_ecg`'s result with the machine's own rate, PR, QRS duration and axis where the machine has them.

    MIMIC-IV-ECG's cart measured these on the full-resolution record with its delineation; the signal keeps what
    the machine does not report (RR irregularity, voltages). ``source`` names what came from where.

    Args:
        measured: a `measure_ecg` result of the same record.
        row: its machine_measurements.csv values (`measurements_from_machine` keys), or None.

    Returns:
        The merged measurements (``measured`` unchanged when the row gives nothing).
    """
    if not row:
        return measured
    machine = {k: v for k, v in measurements_from_machine(row).items() if k != "source" and v is not None}
    if not machine:
        return measured
    return {**measured, **machine, "source": f"machine_measurements ({', '.join(machine)}) + neurokit2"}
