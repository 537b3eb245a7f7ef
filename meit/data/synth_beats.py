"""The signal model behind `meit.data.synth`: one record's 12-lead waveform from its SCP codes.

The heart is a moving dipole: each beat is a sum of skewed Gaussian waves (P, QRS parts, ST, T),
each with a 3-D direction (x left, y inferior, z anterior), projected onto the 12 lead vectors, so
III = II - I, aVR = -(I + II) / 2, ... hold and an axis change is physical. Electrode noise is added
per electrode (RA, LA, LL, V1-V6) and mapped to leads, which keeps the limb-lead identities exact.
Findings change the dipole: bundle-branch blocks add late/broad QRS forces, LAFB turns the axis
superior, LVH scales QRS voltage to a Sokolow-Lyon target, AFIB replaces P waves by fibrillatory
waves and makes RR irregular, and so on (see `_beat_components` and `_rhythm`). The recording
device's filters (`_device_filters`) and `render_record`, which puts it all together, live here too.
Leads are in the standard order I, II, III, aVR, aVL, aVF, V1-V6 throughout.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import signal as sps

# Precordial lead directions in the horizontal plane (degrees from left towards anterior) and gains.
_PRECORDIAL = ((115.0, 0.9), (92.0, 1.5), (75.0, 1.6), (58.0, 1.5), (35.0, 1.3), (10.0, 1.0))


def _lead_matrix() -> np.ndarray:
    """(12, 3) projection of the cardiac dipole onto the leads I..V6."""
    lead_i = np.array([1.0, 0.0, 0.0])
    lead_ii = np.array([0.5, np.sqrt(3) / 2, 0.0])
    rows = [lead_i, lead_ii, lead_ii - lead_i, -(lead_i + lead_ii) / 2, lead_i - lead_ii / 2, lead_ii - lead_i / 2]
    for angle, gain in _PRECORDIAL:
        a = np.deg2rad(angle)
        rows.append(gain * np.array([np.cos(a), 0.1, np.sin(a)]))
    return np.stack(rows)


def _electrode_matrix() -> np.ndarray:
    """(12, 9) map from electrode potentials RA, LA, LL, V1..V6 to the 12 leads."""
    m = np.zeros((12, 9))
    ra, la, ll = np.eye(9)[:3]
    m[0], m[1], m[2] = la - ra, ll - ra, ll - la
    m[3], m[4], m[5] = ra - (la + ll) / 2, la - (ra + ll) / 2, ll - (ra + la) / 2
    for k in range(6):
        m[6 + k] = np.eye(9)[3 + k] - (ra + la + ll) / 3
    return m


def _project(matrix: np.ndarray, x: np.ndarray) -> np.ndarray:
    """matrix @ x via einsum: BLAS matmul is ~50x slower for these thin shapes on this CPU."""
    return np.einsum("ij,jk->ik", matrix, x)


LEADS_3D = _lead_matrix()
LEADS_ELECTRODES = _electrode_matrix()
_LIMB = slice(0, 6)


# ---------------------------------------------------------------- beat model


def _unit(v: tuple[float, float, float] | np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


def _jitter(rng: np.random.Generator, v: tuple[float, float, float], scale: float = 0.12) -> np.ndarray:
    return _unit(np.asarray(v, dtype=float) + rng.normal(0, scale, 3))


def _frontal(deg: float, z: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return _unit((np.cos(a), np.sin(a), z))


@dataclass
class _Wave:
    """One skewed Gaussian wave: centre (s, relative to the R peak), left/right widths (s), amplitude, 3-D direction."""

    t: float
    sl: float
    sr: float
    amp: float
    d: np.ndarray
    part: str  # "P", "QRS", "T"


@dataclass
class _Beat:
    waves: list[_Wave]
    st_dir: np.ndarray = field(default_factory=lambda: np.zeros(3))  # ST-segment shift (mV vector)
    pr: float = 0.16
    qt: float = 0.40
    offset: float = 0.05  # QRS end (J point), s
    t_center: float = 0.25
    axis: float = 60.0


def _qrs_waves(codes: dict[str, float], rng: np.random.Generator, width: float) -> tuple[list[_Wave], float]:
    """QRS forces for the record's conduction, and the frontal axis of the main force (degrees)."""
    w = width
    if "CLBBB" in codes:
        main = _jitter(rng, (0.85, rng.uniform(-0.1, 0.3), -0.5), 0.06)
        amp = rng.uniform(0.9, 1.3)
        waves = [_Wave(-0.042, 0.009, 0.009, 0.25, _jitter(rng, (0.6, 0.1, -0.25)), "QRS"),
                 _Wave(-0.004, 0.017 * w, 0.017 * w, amp, main, "QRS"),
                 _Wave(0.042, 0.019 * w, 0.019 * w, amp * rng.uniform(0.9, 1.15), _unit(main + (0.1, -0.15, -0.35)),
                       "QRS")]
        return waves, float(np.rad2deg(np.arctan2(main[1], main[0])))
    axis = rng.uniform(-80, -55) if "LAFB" in codes else rng.uniform(-5, 80)
    main = _frontal(axis, rng.uniform(-0.7, -0.35))
    septal = (-0.3, 0.9, 0.3) if "LAFB" in codes else (-0.55, 0.25, 0.8)
    anterior = (0.45, -0.35, 0.8) if "LAFB" in codes else (0.45, 0.35, 0.8)
    w *= 1.12 if "LAFB" in codes else 1.0
    waves = [_Wave(-0.030 * w, 0.007 * w, 0.007 * w, rng.uniform(0.12, 0.22), _jitter(rng, septal), "QRS"),
             _Wave(-0.013 * w, 0.009 * w, 0.009 * w, rng.uniform(0.4, 0.7), _jitter(rng, anterior), "QRS"),
             _Wave(0.0, 0.010 * w, 0.010 * w, rng.uniform(1.0, 1.6), main, "QRS"),
             _Wave(0.022 * w, 0.008 * w, 0.008 * w, rng.uniform(0.15, 0.35), _jitter(rng, (-0.3, -0.4, -0.7)), "QRS")]
    if "CRBBB" in codes:
        waves.append(_Wave(rng.uniform(0.05, 0.06), 0.017, 0.019, rng.uniform(0.6, 0.9),
                           _jitter(rng, (-0.75, 0.05, 0.65), 0.08), "QRS"))
    return waves, axis


def _scale_qrs(waves: list[_Wave], codes: dict[str, float], rng: np.random.Generator) -> None:
    """Scales QRS amplitudes so voltage criteria (LVOLT, LVH by Sokolow-Lyon) hold, or clearly do not."""
    qrs = [w for w in waves if w.part == "QRS"]
    t = np.arange(-0.12, 0.16, 0.002)
    leads = LEADS_3D @ sum(w.amp * np.outer(w.d, _skewed(t, w)) for w in qrs)
    limb_pp = float((leads[_LIMB].max(1) - leads[_LIMB].min(1)).max())
    sokolow = float(-leads[6].min() + max(leads[10].max(), leads[11].max()))
    factor = 1.0
    if "LVOLT" in codes:
        factor = rng.uniform(0.25, 0.42) / limb_pp
    elif limb_pp < 0.8:
        factor = 0.8 / limb_pp
    if "LVH" in codes:
        factor = rng.uniform(3.9, 5.2) / sokolow
    elif sokolow * factor > 3.0:
        factor = 3.0 / sokolow
    for w in qrs:
        w.amp *= factor


def _skewed(t: np.ndarray, w: _Wave) -> np.ndarray:
    sigma = np.where(t < w.t, w.sl, w.sr)
    return np.exp(-0.5 * ((t - w.t) / sigma) ** 2)


def _territory(rng: np.random.Generator) -> np.ndarray:
    """A random ST/T territory: anterior, inferior or lateral."""
    dirs = ((0.25, 0.0, 1.0), (0.05, 1.0, 0.1), (1.0, -0.15, 0.25))
    return _jitter(rng, dirs[rng.integers(3)], 0.1)


def _scale_to_lead_extreme(d: np.ndarray, target: float) -> float:
    """Amplitude that makes the largest lead projection of direction `d` equal `target` mV."""
    return target / float((LEADS_3D @ d).max())


def _beat_components(codes: dict[str, float], rng: np.random.Generator, rr: float) -> _Beat:
    """All waves of one record's (sinus or conducted) beat, with its PR and QT intervals."""
    width = rng.uniform(0.95, 1.18)
    waves, axis = _qrs_waves(codes, rng, width)
    _scale_qrs(waves, codes, rng)
    beat = _Beat(waves)
    onset = min(w.t - 2.5 * w.sl for w in waves)
    offset = max(w.t + 2.5 * w.sr for w in waves)
    beat.pr = rng.uniform(0.23, 0.32) if "1AVB" in codes else rng.uniform(0.12, 0.18)
    if not {"AFIB", "AFLT"} & codes.keys():
        p_dir = _frontal(rng.uniform(30, 70), rng.uniform(0.0, 0.4))
        waves.append(_Wave(onset - beat.pr + 0.05, 0.022, 0.022, rng.uniform(0.1, 0.2), p_dir, "P"))
    beat.qt = rng.uniform(0.38, 0.43) * np.sqrt(rr) + (offset - onset - 0.09)
    t_sr = rng.uniform(0.028, 0.036)
    t_center = onset + beat.qt - 2.5 * t_sr
    t_dir, t_amp = _frontal(rng.uniform(25, 60), rng.uniform(0.25, 0.6)), rng.uniform(0.25, 0.5)
    if "CLBBB" in codes:
        main = waves[1].d
        t_dir, t_amp = _unit(-main + np.array([0.0, 0.2, 0.3])), rng.uniform(0.3, 0.5)
        beat.st_dir = -0.08 * main
    elif "CRBBB" in codes:
        t_dir = _unit(t_dir - 0.6 * waves[-1].d)
    if "LVOLT" in codes:
        t_amp *= 0.4
    if "INVT" in codes:
        t_dir = -_territory(rng)
        t_amp = _scale_to_lead_extreme(-t_dir, rng.uniform(0.25, 0.5))
    waves.append(_Wave(t_center, rng.uniform(0.038, 0.05), t_sr, t_amp, t_dir, "T"))
    if "STE_" in codes:
        d = _territory(rng)
        beat.st_dir = d * _scale_to_lead_extreme(d, rng.uniform(0.25, 0.45))
    elif "STD_" in codes:
        d = _jitter(rng, ((0.9, 0.3, 0.3), (0.6, 0.8, 0.2))[rng.integers(2)], 0.1)
        beat.st_dir = -d * _scale_to_lead_extreme(d, rng.uniform(0.18, 0.3))
    if "LVOLT" in codes:  # low-voltage records have proportionally smaller ST shifts
        beat.st_dir = 0.6 * beat.st_dir
    if "INVT" in codes and np.any(beat.st_dir):  # keep the inversion visible on top of the ST shift
        waves[-1].amp += float(np.abs(LEADS_3D @ beat.st_dir).max())
    beat.offset, beat.t_center, beat.axis = offset, t_center, axis
    return beat


def _pvc_components(rng: np.random.Generator, qrs_amp: float) -> _Beat:
    """An ectopic ventricular beat: no P, wide bizarre QRS, discordant T."""
    d = _jitter(rng, ((0.6, 0.6, -0.5), (-0.5, 0.7, 0.5), (0.3, -0.8, -0.3))[rng.integers(3)], 0.1)
    amp = qrs_amp * rng.uniform(1.1, 1.5)
    waves = [_Wave(-0.025, 0.02, 0.02, amp, d, "QRS"), _Wave(0.03, 0.022, 0.022, 0.8 * amp, d, "QRS"),
             _Wave(0.3, 0.06, 0.045, 0.45 * amp, -d, "T")]
    return _Beat(waves)


def _template(beat: _Beat, fs: int, pre: float, post: float) -> np.ndarray:
    """The beat rendered as (12, L) lead signals on the grid -pre..post seconds around the R peak."""
    t = np.arange(-round(pre * fs), round(post * fs)) / fs
    amps = np.array([w.amp for w in beat.waves])
    dirs = np.stack([w.d for w in beat.waves])
    centres = np.array([w.t for w in beat.waves])[:, None]
    sig = np.where(t[None] < centres, np.array([w.sl for w in beat.waves])[:, None],
                   np.array([w.sr for w in beat.waves])[:, None])
    vcg = (dirs * amps[:, None]).T @ np.exp(-0.5 * ((t[None] - centres) / sig) ** 2)
    if np.any(beat.st_dir):
        plateau = 1 / (1 + np.exp(-(t - beat.offset + 0.005) / 0.006)) / (1 + np.exp((t - beat.t_center) / 0.035))
        vcg = vcg + np.outer(beat.st_dir, plateau)
    return _project(LEADS_3D, vcg)


# ---------------------------------------------------------------- rhythm


def _rate(codes: dict[str, float], rng: np.random.Generator) -> float:
    if "SBRAD" in codes:
        return rng.uniform(42, 56)
    if "STACH" in codes:
        return rng.uniform(106, 145)
    if "AFIB" in codes:
        return rng.uniform(65, 135)
    return rng.uniform(62, 95)


def _rhythm(codes: dict[str, float], rng: np.random.Generator, duration: float) -> tuple[np.ndarray, float]:
    """R-peak times (s) covering [-1, duration + 1], and the flutter cycle length (0 if not flutter)."""
    start, stop = -rng.uniform(0.6, 1.4), duration + 1.0
    if "AFLT" in codes:
        ff = rng.uniform(0.19, 0.24)
        n_f = int((stop - start) / ff) + 2
        ratios = rng.choice([2, 3, 4], size=n_f) if rng.random() < 0.4 else np.full(n_f, rng.choice([2, 4]))
        flutter_idx = np.cumsum(ratios)
        flutter_idx = flutter_idx[flutter_idx < n_f]
        return start + flutter_idx * ff + rng.uniform(0.12, 0.2), ff
    rr0 = 60.0 / _rate(codes, rng)
    n = int((stop - start) / (0.5 * rr0)) + 2
    if "AFIB" in codes:
        rr = np.clip(rr0 * np.exp(rng.normal(0, 0.22, n)), max(0.3, 0.5 * rr0), 1.8 * rr0)
    else:
        resp = 0.03 * np.sin(2 * np.pi * rng.uniform(0.15, 0.3) * np.arange(n) * rr0 + rng.uniform(0, 6.3))
        rr = rr0 * (1 + resp + rng.normal(0, 0.01, n))
    times = start + np.concatenate([[0.0], np.cumsum(rr)])
    return times[times < stop], 0.0


def _atrial_activity(codes: dict[str, float], rng: np.random.Generator, t: np.ndarray, ff: float,
                     r_times: np.ndarray) -> np.ndarray:
    """(12, T) fibrillatory or flutter waves (zeros for other rhythms)."""
    if "AFIB" in codes:
        f = np.zeros_like(t)
        for _ in range(3):
            freq = rng.uniform(4.5, 8.5)
            phase = np.cumsum(rng.normal(0, 0.05, t.size)) * 0.2
            f += rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * freq * t + phase + rng.uniform(0, 6.3))
        f *= rng.uniform(0.05, 0.1) / np.abs(f).max()
        return _project(LEADS_3D, np.outer(_jitter(rng, (0.2, 0.5, 0.8)), f))
    if "AFLT" in codes:
        phase = ((t - r_times[0] + 0.15) / ff) % 1.0
        saw = np.where(phase < 0.75, phase / 0.75, (1 - phase) / 0.25) - 0.5
        saw = np.convolve(saw, np.ones(9) / 9, mode="same")
        return _project(LEADS_3D, np.outer(_jitter(rng, (0.1, -0.85, 0.5)), saw * rng.uniform(0.3, 0.5)))
    return np.zeros((12, t.size))


def _place_pvcs(r_times: np.ndarray, rng: np.random.Generator, duration: float) -> np.ndarray:
    """Turns 1-3 sinus beats into premature beats (the next sinus beat keeps its time: compensatory pause)."""
    candidates = np.flatnonzero((r_times > 0.8) & (r_times < duration - 1.0))
    chosen: list[int] = []
    for k in rng.permutation(candidates):
        if all(abs(k - c) > 1 for c in chosen):
            chosen.append(int(k))
        if len(chosen) == rng.integers(1, 4) or len(chosen) == 3:
            break
    is_pvc = np.zeros(r_times.size, dtype=bool)
    for k in chosen:
        r_times[k] = r_times[k - 1] + rng.uniform(0.5, 0.65) * (r_times[k] - r_times[k - 1])
        is_pvc[k] = True
    return is_pvc


def _add_beats(x: np.ndarray, template: np.ndarray, samples: np.ndarray, pre: int, gains: np.ndarray) -> None:
    """Adds `template` (12, L), whose R peak is at column `pre`, at each R sample of `samples` into `x`."""
    n, length = x.shape[1], template.shape[1]
    for s, g in zip(samples, gains):
        a, b = s - pre, s - pre + length
        lo, hi = max(a, 0), min(b, n)
        if lo < hi:
            x[:, lo:hi] += g * template[:, lo - a : hi - a]


def _measure(beat: _Beat, fs: int) -> dict[str, float]:
    """QRS duration, PR, QT and frontal axes of a beat, from its dipole (the machine's 'global' measurements)."""
    t = np.arange(-0.2, 0.25, 1 / max(fs, 500))
    vcg = {part: sum((w.amp * np.outer(w.d, _skewed(t, w)) for w in beat.waves if w.part == part),
                     np.zeros((3, t.size))) for part in ("P", "QRS", "T")}
    mag = np.linalg.norm(vcg["QRS"], axis=0)
    above = t[mag > 0.05 * mag.max()]
    qrs_on, qrs_off = float(above[0]), float(above[-1])

    def axis(part: str) -> float:
        area = vcg[part][:2].sum(axis=1)
        return float(np.rad2deg(np.arctan2(area[1], area[0]))) if np.any(area) else float("nan")

    t_axis = float(np.rad2deg(np.arctan2(*[w for w in beat.waves if w.part == "T"][0].d[[1, 0]])))
    return {"qrs_ms": 1000 * (qrs_off - qrs_on), "pr_ms": 1000 * beat.pr, "qt_ms": 1000 * float(beat.qt),
            "qrs_axis": axis("QRS"), "p_axis": axis("P"), "t_axis": t_axis}


def _electrode_noise(rng: np.random.Generator, t: np.ndarray, site: str) -> np.ndarray:
    """(12, T) noise made at the electrodes (RA, LA, LL, V1-V6): white, baseline wander, powerline, EMG bursts."""
    mimic = site == "mimic"
    e = rng.standard_normal((9, t.size), dtype=np.float32)
    e *= rng.uniform(0.008, 0.02) if mimic else rng.uniform(0.003, 0.01)
    # Wander (two shared slow frequencies, e.g. respiration) and mains hum, per electrode amplitude and phase:
    # a sin(wt + p) = a cos(p) sin(wt) + a sin(p) cos(wt), so only six base waveforms need computing.
    omegas = 2 * np.pi * np.array([*rng.uniform(0.05, 0.45, 2), 60.0 if mimic else 50.0])
    base = np.concatenate([np.sin(np.outer(omegas, t)), np.cos(np.outer(omegas, t))])
    amps = np.concatenate([rng.uniform(0.0, 0.25 if mimic else 0.08, (9, 2)), rng.uniform(0, 0.02, (9, 1))], axis=1)
    phases = rng.uniform(0, 2 * np.pi, (9, 3))
    e += _project(np.concatenate([amps * np.cos(phases), amps * np.sin(phases)], axis=1), base).astype(np.float32)
    if rng.random() < (0.3 if mimic else 0.1):
        centre, width = rng.uniform(0, t[-1]), rng.uniform(0.3, 2.0)
        envelope = np.exp(-0.5 * ((t - centre) / width) ** 2)
        e += rng.uniform(0.02, 0.06) * rng.standard_normal((9, t.size), dtype=np.float32) * envelope
    return _project(LEADS_ELECTRODES, e)


_SOS_CACHE: dict[tuple[str, int], list[np.ndarray]] = {}


def _device_filters(site: str, fs: int) -> list[np.ndarray]:
    """Second-order sections of the recording device: PTB-XL-like 0.5-100 Hz; MIMIC-like 150 Hz low-pass + notch."""
    key = (site, fs)
    if key not in _SOS_CACHE:
        nyq = fs / 2
        if site == "ptbxl":
            band = [0.5, 100.0] if 100.0 < 0.9 * nyq else 0.5  # below 222 Hz: high-pass only (scipy wants a scalar)
            sos = [sps.butter(2, band, btype="bandpass" if isinstance(band, list) else "highpass", fs=fs,
                              output="sos")]
        else:
            sos = [sps.butter(2, 150.0, fs=fs, output="sos")] if 150.0 < 0.9 * nyq else []
            if 60.0 < 0.9 * nyq:
                b, a = sps.iirnotch(60.0, 30.0, fs=fs)
                sos.append(sps.tf2sos(b, a))
        _SOS_CACHE[key] = [np.concatenate(sos)] if sos else []
    return _SOS_CACHE[key]


def render_record(codes: dict[str, float], rng: np.random.Generator, fs: int = 500, duration_s: float = 10.0,
                  site: str = "ptbxl") -> tuple[np.ndarray, dict[str, float]]:
    """One record's 12-lead signal (float32, mV, standard lead order) and its measurements.

    Args:
        codes: SCP codes the waveform must show (see `sample_codes`).
        rng: random generator (all per-record variation comes from it).
        fs: sampling frequency, Hz.
        duration_s: length, seconds.
        site: "ptbxl" or "mimic": device filtering, noise and amplitude scale.

    Returns:
        (signal (12, T), measurements: heart_rate, rr_ms, pr_ms, qrs_ms, qt_ms, p_axis, qrs_axis, t_axis).
    """
    n = round(fs * duration_s)
    t = np.arange(n) / fs
    r_times, ff = _rhythm(codes, rng, duration_s)
    inside = r_times[(r_times >= 0) & (r_times < duration_s)]
    rr = float(np.mean(np.diff(inside))) if inside.size > 1 else 60.0 / _rate(codes, rng)
    beat = _beat_components(codes, rng, rr)
    pre = round(0.5 * fs)
    is_pvc = _place_pvcs(r_times, rng, duration_s) if "PVC" in codes else np.zeros(r_times.size, dtype=bool)
    samples = np.round(r_times * fs).astype(int)
    gains = 1 + rng.normal(0, 0.025, r_times.size)
    x = np.zeros((12, n))
    _add_beats(x, _template(beat, fs, 0.5, 0.75), samples[~is_pvc], pre, gains[~is_pvc])
    if is_pvc.any():
        qrs_amp = max(w.amp for w in beat.waves if w.part == "QRS")
        _add_beats(x, _template(_pvc_components(rng, qrs_amp), fs, 0.5, 0.75), samples[is_pvc], pre, gains[is_pvc])
    x += _atrial_activity(codes, rng, t, ff, r_times)
    x *= rng.uniform(1.0, 1.15) if site == "mimic" else 1.0
    x += _electrode_noise(rng, t, site)
    # Mirror-padding by up to 2 s lets the 0.5 Hz high-pass settle outside the record: with scipy's short default
    # odd padding a beat cut at the edge leaves a ~1 mV transient decaying over the first half second.
    for sos in _device_filters(site, fs):
        x = sps.sosfiltfilt(sos, x, axis=-1, padtype="even", padlen=min(n - 1, 2 * fs))
    m = _measure(beat, fs)
    m |= {"heart_rate": 60.0 / rr, "rr_ms": 1000 * rr}
    if {"AFIB", "AFLT"} & codes.keys():
        m["pr_ms"] = m["p_axis"] = float("nan")
    return x.astype(np.float32), m
