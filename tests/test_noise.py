"""Noise kinds hit their SNR exactly, are seeded, have the right spectra; MEIT's segment protocol."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from meit.data.noise import MEIT_RATIOS, NOISES, add_noise, meit_segment_noise, snr_db
from meit.data.synth import synthesize

FS = 500


@pytest.fixture(scope="module")
def ecg() -> np.ndarray:
    return synthesize(2, seed=5).signals


@pytest.mark.parametrize("kind", ["gaussian", "baseline", "powerline", "emg", "motion", "mix"])
@pytest.mark.parametrize("target", [24.0, 12.0, 6.0, 0.0, -3.0])
def test_snr_within_0_2_db_per_lead(ecg: np.ndarray, kind: str, target: float) -> None:
    noisy = add_noise(ecg, target, kind, FS, seed_or_rng=1)
    assert noisy.shape == ecg.shape and noisy.dtype == ecg.dtype
    measured = snr_db(ecg, noisy)
    assert measured.shape == (2, 12)
    assert np.abs(measured - target).max() < 0.2


def test_single_record_and_torch(ecg: np.ndarray) -> None:
    one = add_noise(ecg[0], 10.0, "gaussian", FS, 3)
    assert one.shape == (12, 5000)
    assert np.abs(snr_db(ecg[0], one) - 10.0).max() < 0.2
    tensor = add_noise(torch.from_numpy(ecg), 10.0, "emg", FS, 3)
    assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32
    assert np.abs(snr_db(ecg, tensor.numpy()) - 10.0).max() < 0.2


def test_infinite_snr_returns_input(ecg: np.ndarray) -> None:
    assert add_noise(ecg, float("inf"), "mix", FS, 0) is ecg


def test_seeded(ecg: np.ndarray) -> None:
    a = add_noise(ecg, 6.0, "mix", FS, 7)
    b = add_noise(ecg, 6.0, "mix", FS, 7)
    c = add_noise(ecg, 6.0, "mix", FS, 8)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_unknown_kind_lists_choices(ecg: np.ndarray) -> None:
    with pytest.raises(ValueError, match="unknown noise kind: pink; choose from baseline, emg, gaussian"):
        add_noise(ecg, 6.0, "pink", FS, 0)
    assert set(NOISES.names()) == {"gaussian", "baseline", "powerline", "emg", "motion", "mix"}


def _spectrum(noise: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray]:
    power = (np.abs(np.fft.rfft(noise, axis=-1)) ** 2).reshape(-1, noise.shape[-1] // 2 + 1).sum(0)
    return np.fft.rfftfreq(noise.shape[-1], 1 / fs), power


def _band_fraction(kind: str, low: float, high: float, fs: float = FS, n: int = 5000) -> float:
    x = np.ones((12, n)) + np.random.default_rng(0).normal(0, 0.1, (12, n))
    noise = add_noise(x, 0.0, kind, fs, 2) - x
    freqs, power = _spectrum(noise, fs)
    band = (freqs >= low) & (freqs <= high)
    return float(power[band].sum() / power.sum())


def test_spectra() -> None:
    assert _band_fraction("baseline", 0.0, 1.0) > 0.99
    assert _band_fraction("powerline", 49.5, 50.5) + _band_fraction("powerline", 59.5, 60.5) > 0.6
    harmonics = sum(_band_fraction("powerline", h - 0.5, h + 0.5) for h in (50, 60, 100, 120, 150, 180))
    assert harmonics > 0.99
    assert _band_fraction("emg", 15.0, 160.0) > 0.95
    assert _band_fraction("motion", 0.0, 15.0) > 0.95
    assert _band_fraction("emg", 15.0, 50.0, fs=100, n=1000) > 0.9  # capped below Nyquist at 100 Hz


def test_motion_is_bursty(ecg: np.ndarray) -> None:
    noise = add_noise(ecg[0], 0.0, "motion", FS, 4) - ecg[0]
    envelope = np.abs(noise).sum(0)
    assert (envelope < 1e-9).mean() > 0.3  # most of the record untouched


@pytest.mark.parametrize("ratio", MEIT_RATIOS)
def test_meit_segment_noise_one_segment_all_leads(ecg: np.ndarray, ratio: float) -> None:
    for seed in range(20):
        noisy = meit_segment_noise(ecg[0], ratio, seed)
        changed = np.flatnonzero(np.any(noisy != ecg[0], axis=0))
        if ratio == 1.0:
            assert changed.size == 0
            continue
        if changed.size == 0:
            continue
        assert changed[-1] - changed[0] + 1 <= (1 - ratio) * ecg.shape[-1]
        span = slice(changed[0], changed[-1] + 1)
        assert np.all(noisy[:, span] != ecg[0][:, span])  # contiguous, on every lead
        assert np.abs(noisy - ecg[0]).std() < 0.1 * 5


def test_meit_segment_noise_statistics() -> None:
    x = np.zeros((200, 12, 1000))
    noisy = meit_segment_noise(x, 0.8, 0)
    lengths = np.array([np.any(r != 0, axis=0).sum() for r in noisy])
    assert 0.05 * 1000 < lengths.mean() < 0.15 * 1000  # U(0, 0.2) x T -> mean 0.1 T
    sigmas = np.array([r[:, np.any(r != 0, axis=0)].std() for r in noisy if np.any(r)])
    assert sigmas.max() < 0.11 and 0.03 < sigmas.mean() < 0.07  # sigma ~ U(0, 0.1)
    np.testing.assert_array_equal(meit_segment_noise(x[:3], 0.9, 1), meit_segment_noise(x[:3], 0.9, 1))
