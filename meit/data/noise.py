"""Additive ECG noise at an exact per-lead SNR, and MEIT's own segment-noise protocol.

SNR is in dB per lead: SNR = 10 log10(P_signal / P_noise), powers being mean squares over time.
Each kind generates raw noise of the signal's shape; `add_noise` then scales it lead by lead so the
added noise has exactly the target SNR against that lead's signal.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import signal as sps

from meit.util.registry import Registry

NoiseFn = Callable[[np.random.Generator, tuple[int, ...], float], np.ndarray]
NOISES: Registry[np.ndarray] = Registry("noise kind")
MEIT_RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8)


@NOISES.register("gaussian")
def gaussian_noise(rng: np.random.Generator, shape: tuple[int, ...], fs: float) -> np.ndarray:
    """White Gaussian noise."""
    return rng.standard_normal(shape)


@NOISES.register("baseline")
def baseline_wander(rng: np.random.Generator, shape: tuple[int, ...], fs: float) -> np.ndarray:
    """Baseline wander: a few random sinusoids between 0.05 and 0.9 Hz (respiration, electrode drift)."""
    t = np.arange(shape[-1]) / fs
    lead_shape = (*shape[:-1], 1)
    out = np.zeros(shape)
    for _ in range(4):
        freq = rng.uniform(0.05, 0.9, lead_shape)
        out += rng.uniform(0.2, 1.0, lead_shape) * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi, lead_shape))
    return out


@NOISES.register("powerline")
def powerline(rng: np.random.Generator, shape: tuple[int, ...], fs: float) -> np.ndarray:
    """Mains interference: 50 or 60 Hz with weaker 2nd and 3rd harmonics (those below Nyquist)."""
    t = np.arange(shape[-1]) / fs
    line = 50.0 if rng.random() < 0.5 else 60.0
    lead_shape = (*shape[:-1], 1)
    out = np.zeros(shape)
    for harmonic, weight in ((1, 1.0), (2, 0.3), (3, 0.15)):
        freq = harmonic * line
        if harmonic > 1 and freq >= fs / 2:
            break
        phase = rng.uniform(0, 2 * np.pi, lead_shape)
        out += weight * rng.uniform(0.7, 1.0, lead_shape) * np.sin(2 * np.pi * freq * t + phase)
    return out


@NOISES.register("emg")
def emg(rng: np.random.Generator, shape: tuple[int, ...], fs: float) -> np.ndarray:
    """Muscle noise: Gaussian noise band-limited to 20-150 Hz (upper edge capped below Nyquist), slowly modulated."""
    high = min(150.0, 0.45 * fs)
    sos = sps.butter(4, [20.0, high], btype="bandpass", fs=fs, output="sos")
    band = sps.sosfiltfilt(sos, rng.standard_normal(shape), axis=-1)
    t = np.arange(shape[-1]) / fs
    envelope = 1.0 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t + rng.uniform(0, 2 * np.pi))
    return band * envelope


@NOISES.register("motion")
def electrode_motion(rng: np.random.Generator, shape: tuple[int, ...], fs: float) -> np.ndarray:
    """Electrode motion: 1-3 bursts of large, low-frequency (< ~10 Hz) excursions under a Hann window."""
    n = shape[-1]
    sos = sps.butter(2, min(10.0, 0.4 * fs), fs=fs, output="sos")
    slow = sps.sosfiltfilt(sos, rng.standard_normal(shape), axis=-1)
    envelope = np.zeros(n)
    for _ in range(int(rng.integers(1, 4))):
        length = max(2, int(rng.uniform(0.05, 0.2) * n))
        start = int(rng.integers(0, n - length + 1))
        envelope[start : start + length] += np.hanning(length)
    if not envelope.any():
        envelope[:] = 1.0
    return slow * envelope


@NOISES.register("mix")
def mixture(rng: np.random.Generator, shape: tuple[int, ...], fs: float) -> np.ndarray:
    """A random mixture of all other kinds, each normalised to unit power per lead before weighting."""
    out = np.zeros(shape)
    for name in ("gaussian", "baseline", "powerline", "emg", "motion"):
        part = NOISES.get(name)(rng, shape, fs)
        power = np.mean(part**2, axis=-1, keepdims=True)
        out += rng.uniform(0.2, 1.0) * part / np.sqrt(np.where(power > 0, power, 1.0))
    return out


def _as_numpy(x: Any) -> tuple[np.ndarray, Callable[[np.ndarray], Any]]:
    """x as a numpy array, plus a function turning a result back into x's type (torch tensors kept as tensors)."""
    if isinstance(x, np.ndarray):
        return x, lambda y: y.astype(x.dtype, copy=False)
    if type(x).__module__.startswith("torch"):
        import torch

        return x.detach().cpu().numpy(), lambda y: torch.as_tensor(y, dtype=x.dtype, device=x.device)
    arr = np.asarray(x, dtype=np.float32)
    return arr, lambda y: y.astype(arr.dtype, copy=False)


def _check_shape(x: np.ndarray) -> None:
    if x.ndim not in (2, 3):
        raise ValueError(f"expected a signal shaped (leads, T) or (batch, leads, T), got shape {x.shape}")


def add_noise(x: Any, snr_db: float, kind: str, fs: float, seed_or_rng: int | np.random.Generator | None = None) -> Any:
    """Adds noise of `kind` at `snr_db` per lead.

    Args:
        x: signal (leads, T) or (batch, leads, T), numpy array or torch tensor.
        snr_db: target SNR in dB per lead, 10 log10(P_signal / P_noise); `inf` returns `x` unchanged.
        kind: one of `NOISES.names()`: gaussian, baseline, powerline, emg, motion, mix.
        fs: sampling frequency, Hz.
        seed_or_rng: seed or generator (same seed, same noise).

    Returns:
        The noisy signal, same shape and type as `x`. Leads with zero power (or all NaN) stay unchanged.
    """
    generate = NOISES.get(kind)
    if math.isinf(snr_db) and snr_db > 0:
        return x
    arr, back = _as_numpy(x)
    _check_shape(arr)
    rng = np.random.default_rng(seed_or_rng)
    raw = generate(rng, arr.shape, float(fs))
    clean = arr.astype(np.float64)
    p_signal = np.nan_to_num(np.nanmean(clean**2, axis=-1, keepdims=True)) if clean.size else clean
    p_raw = np.mean(raw**2, axis=-1, keepdims=True)
    scale = np.sqrt(p_signal / (np.where(p_raw > 0, p_raw, 1.0) * 10 ** (snr_db / 10)))
    return back(clean + scale * raw)


def snr_db(clean: Any, noisy: Any) -> np.ndarray:
    """Per-lead SNR in dB of `noisy` against `clean` (noise = noisy - clean); shape = clean.shape[:-1]."""
    c, _ = _as_numpy(clean)
    n, _ = _as_numpy(noisy)
    c, n = c.astype(np.float64), n.astype(np.float64)
    return 10 * np.log10(np.nanmean(c**2, axis=-1) / np.nanmean((n - c) ** 2, axis=-1))


def meit_segment_noise(x: Any, ratio: float, seed_or_rng: int | np.random.Generator | None = None) -> Any:
    """MEIT's robustness protocol: Gaussian noise on one random contiguous segment, the same on all leads.

    With p = 1 - ratio, the segment length is U(0, p) x T and sigma ~ U(0, 0.1) mV; ratio 1.0 is clean.
    A batch (B, leads, T) draws one segment and sigma per record.

    Args:
        x: signal (leads, T) or (batch, leads, T) in mV, numpy array or torch tensor.
        ratio: MEIT's clean ratio, e.g. one of 1.0, 0.95, 0.9, 0.85, 0.8.
        seed_or_rng: seed or generator.

    Returns:
        The noisy signal, same shape and type as `x`.
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must be in [0, 1], got {ratio}")
    arr, back = _as_numpy(x)
    _check_shape(arr)
    out = arr.astype(np.float64, copy=True)
    rng = np.random.default_rng(seed_or_rng)
    records = out[None] if out.ndim == 2 else out
    n = records.shape[-1]
    for record in records:
        length = int(rng.uniform(0, 1.0 - ratio) * n)
        start = int(rng.integers(0, n - length + 1))
        sigma = rng.uniform(0, 0.1)
        record[:, start : start + length] += rng.normal(0, sigma, (record.shape[0], length))
    return back(out)
