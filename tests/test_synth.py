"""Synthetic ECGs: the findings are in the waveform (checked with neurokit2), and datasets are real formats."""

from __future__ import annotations

import ast
import csv
import re
import warnings
from collections import Counter
from pathlib import Path

import neurokit2 as nk
import numpy as np
import pytest
import wfdb
from scipy import signal as sps

from meit.data import synth, wfdb_io
from meit.data.__main__ import main as data_main
from meit.data.reports import MIMIC_PHRASES, PTBXL_NORM_AFTER_RATE, PTBXL_PHRASES, mimic_statements, ptbxl_report
from meit.data.synth import RHYTHMS, sample_codes, synthesize, write_dataset

FIXTURES = Path(__file__).parent / "fixtures"
FS = 500
LEAD_I, II, III, AVR, AVL, AVF, V1, V2, V3, V4, V5, V6 = range(12)


# ---------------------------------------------------------------- measurement helpers (independent of the model)


def r_peaks(x: np.ndarray) -> np.ndarray:
    """neurokit2 R peaks on the first of II, I, V5, V6, V2, V4 giving a regular series (else the most regular)."""
    best, best_cv = np.array([], dtype=int), np.inf
    for lead in (II, LEAD_I, V5, V6, V2, V4):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, info = nk.ecg_peaks(nk.ecg_clean(x[lead], sampling_rate=FS), sampling_rate=FS)
        peaks = np.asarray(info["ECG_R_Peaks"], dtype=int)
        rr = np.diff(peaks)
        cv = np.std(rr) / np.mean(rr) if len(rr) > 2 else np.inf
        if cv < best_cv:
            best, best_cv = peaks, cv
        if len(peaks) >= 5 and np.ptp(rr) < 0.2 * np.median(rr):
            return peaks
    return best


def median_beat(x: np.ndarray, peaks: np.ndarray, pre: float = 0.45, post: float = 0.55) -> np.ndarray:
    """Median beat (12, L) with R (re-aligned on the steepest spatial slope) at sample pre * FS."""
    smooth = sps.sosfiltfilt(sps.butter(2, 40, fs=FS, output="sos"), x, axis=-1)
    velocity = np.sqrt((np.diff(smooth, axis=1) ** 2).sum(0))
    a, b, w = int(pre * FS), int(post * FS), int(0.08 * FS)
    aligned = [p - w + int(np.argmax(velocity[p - w : p + w])) for p in peaks if a + w < p < x.shape[1] - b - w]
    return np.median(np.stack([smooth[:, p - a : p + b] for p in aligned]), axis=0)


def qrs_bounds(beat: np.ndarray, r: int) -> tuple[int, int]:
    """QRS onset/offset (samples) of a median beat: where the spatial velocity exceeds 10 % of its peak."""
    v = np.sqrt((np.diff(beat, axis=1) ** 2).sum(0))
    lo = r - int(0.12 * FS)
    seg = v[lo : r + int(0.12 * FS)]
    k = int(np.argmax(seg))
    thr, gap = 0.1 * seg[k], int(0.015 * FS)
    on = off = k
    while on > 0 and (seg[max(0, on - gap) : on] > thr).any():
        on -= 1
    while off < len(seg) - 1 and (seg[off + 1 : off + 1 + gap] > thr).any():
        off += 1
    return lo + on, lo + off


@pytest.fixture(scope="module")
def batch() -> synth.SynthBatch:
    return synthesize(160, seed=11)


@pytest.fixture(scope="module")
def measured(batch: synth.SynthBatch) -> list[dict]:
    out = []
    for x, codes in zip(batch.signals.astype(np.float64), batch.codes):
        peaks = r_peaks(x)
        beat = median_beat(x, peaks)
        r = int(0.45 * FS)
        on, off = qrs_bounds(beat, r)
        base = np.median(beat[:, on - int(0.03 * FS) : on - int(0.01 * FS)], axis=1)
        qrs = beat[:, on : off + 1] - base[:, None]
        out.append({
            "codes": codes,
            "hr": 60 / np.median(np.diff(peaks) / FS), "rr_cv": np.std(np.diff(peaks)) / np.mean(np.diff(peaks)),
            "qrs_ms": 1000 * (off - on) / FS, "sokolow": -qrs[V1].min() + max(qrs[V5].max(), qrs[V6].max()),
            "limb_pp": np.ptp(beat[:6, r - int(0.04 * FS) : r + int(0.04 * FS)], axis=1).max(),
            "qrs_min": qrs.min(axis=1),
            "qrs_max": qrs.max(axis=1), "st": beat[:, off + int(0.02 * FS)] - base,
            "t": beat[:, off + int(0.1 * FS) : off + int(0.3 * FS)] - base[:, None],
            "p_peak_to_qrs_ms": 1000 * (int(0.28 * FS) - np.argmax(beat[II, on - int(0.3 * FS) : on - int(0.02 * FS)]))
            / FS,
        })
    return out


def _having(batch: synth.SynthBatch, measured: list[dict], include: set[str], exclude: set[str] = frozenset()):
    rows = [m for m in measured if include <= m["codes"].keys() and not exclude & m["codes"].keys()]
    assert rows, f"no records with {include} without {exclude}"
    return rows


# ---------------------------------------------------------------- signals


def test_shapes_and_lead_identities(batch: synth.SynthBatch) -> None:
    x = batch.signals
    assert x.shape == (160, 12, 5000) and x.dtype == np.float32
    assert len(batch.codes) == len(batch.reports) == len(batch.measurements) == 160
    np.testing.assert_allclose(x[:, III], x[:, II] - x[:, LEAD_I], atol=1e-5)
    np.testing.assert_allclose(x[:, AVR], -(x[:, LEAD_I] + x[:, II]) / 2, atol=1e-5)
    np.testing.assert_allclose(x[:, AVR] + x[:, AVL] + x[:, AVF], 0, atol=1e-5)
    assert np.isfinite(x).all()
    assert 0.2 < np.abs(x).max(axis=(1, 2)).min() and np.abs(x).max() < 8


def test_seeded_and_other_rates() -> None:
    a, b, c = synthesize(5, seed=3), synthesize(5, seed=3), synthesize(5, seed=4)
    np.testing.assert_array_equal(a.signals, b.signals)
    assert a.reports == b.reports and a.codes == b.codes
    assert not np.allclose(a.signals, c.signals)
    low = synthesize(3, seed=3, fs=100, duration_s=5.0, site="mimic")
    assert low.signals.shape == (3, 12, 500)
    with pytest.raises(ValueError, match="unknown site"):
        synthesize(1, 0, site="chapman")


def test_heart_rate_matches_rhythm_labels(batch: synth.SynthBatch, measured: list[dict]) -> None:
    checks = 0
    for codes, m in zip(batch.codes, measured):
        if {"PVC", "LVOLT"} & codes.keys():  # neurokit2's detector is unreliable on < 0.5 mV QRS complexes
            continue
        if "SBRAD" in codes:
            assert m["hr"] < 60, codes
        elif "STACH" in codes:
            assert m["hr"] > 100, codes
        elif "SR" in codes:
            assert 60 <= m["hr"] <= 100, codes
        checks += 1
    assert checks > 100


def test_afib_rr_irregular(batch: synth.SynthBatch, measured: list[dict]) -> None:
    assert min(m["rr_cv"] for m in _having(batch, measured, {"AFIB"}, {"LVOLT"})) > 0.1
    assert max(m["rr_cv"] for m in _having(batch, measured, {"SR"}, {"PVC"})) < 0.08


def test_qrs_duration(batch: synth.SynthBatch, measured: list[dict]) -> None:
    noisy = {"PVC", "AFLT", "AFIB", "LVOLT", "STE_"}
    measured = [m for m in measured if m["hr"] < 120]  # faster, and the T wave runs into the QRS offset
    assert max(m["qrs_ms"] for m in _having(batch, measured, {"NORM"})) < 120
    for bbb in ("CLBBB", "CRBBB"):
        assert min(m["qrs_ms"] for m in _having(batch, measured, {bbb}, noisy)) >= 120
    assert all(m["qrs_ms"] >= 120 for c, m in zip(batch.codes, batch.measurements) if {"CLBBB", "CRBBB"} & c.keys())


def test_bundle_branch_morphology(batch: synth.SynthBatch, measured: list[dict]) -> None:
    for m in _having(batch, measured, {"CRBBB"}, {"LVOLT", "PVC"}):  # R' in V1, S in I and V6
        assert m["qrs_max"][V1] > 0.3 and m["qrs_min"][LEAD_I] < -0.1 and m["qrs_min"][V6] < -0.1
    for m in _having(batch, measured, {"CLBBB"}, {"LVOLT", "PVC"}):  # deep S / QS in V1, tall R in I and V6
        assert -m["qrs_min"][V1] > 2 * m["qrs_max"][V1] and m["qrs_max"][LEAD_I] > 0.5 and m["qrs_max"][V6] > 0.4


def test_voltage_criteria(batch: synth.SynthBatch, measured: list[dict]) -> None:
    assert min(m["sokolow"] for m in _having(batch, measured, {"LVH"}, {"PVC"})) > 3.5
    assert max(m["sokolow"] for m in _having(batch, measured, {"NORM"})) < 3.5
    assert max(m["limb_pp"] for m in _having(batch, measured, {"LVOLT"}, {"PVC", "AFLT"})) < 0.5
    assert min(m["limb_pp"] for m in _having(batch, measured, {"NORM"})) > 0.5


def test_lafb_axis(batch: synth.SynthBatch) -> None:
    for codes, m in zip(batch.codes, batch.measurements):
        if "LAFB" in codes:
            assert m["qrs_axis"] < -40
        elif "NORM" in codes:
            assert -30 <= m["qrs_axis"] <= 90


def test_first_degree_block_pr(batch: synth.SynthBatch, measured: list[dict]) -> None:
    # PR = P onset to QRS onset; the P wave's first half (~50 ms) precedes its peak. At slow rates only,
    # so that the previous T wave is out of the search window.
    slow = [m for m in measured if m["hr"] < 85]
    assert min(m["p_peak_to_qrs_ms"] + 50 for m in _having(batch, slow, {"1AVB"}, {"PVC", "LVOLT"})) > 200
    assert max(m["p_peak_to_qrs_ms"] + 50 for m in _having(batch, slow, {"NORM"})) < 200


def test_st_and_t_changes(batch: synth.SynthBatch, measured: list[dict]) -> None:
    # at fast rates the T wave starts within the ST segment; QRS bounds are unreliable on low-voltage records
    measured = [m for m in measured if m["hr"] < 100 and "LVOLT" not in m["codes"]]
    assert min(m["st"].max() for m in _having(batch, measured, {"STE_"})) > 0.15
    assert max(m["st"].min() for m in _having(batch, measured, {"STD_"})) < -0.1
    assert max(np.abs(m["st"]).max() for m in _having(batch, measured, {"NORM"})) < 0.1
    assert max(m["t"].min(axis=1).min() for m in _having(batch, measured, {"INVT"})) < -0.15
    upright = [LEAD_I, II, V4, V5, V6]
    assert min(m["t"][upright].max(axis=1).min() for m in _having(batch, measured, {"NORM"})) > 0.05


def test_pvc_premature_with_compensatory_pause() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        times, _ = synth._rhythm({"SR": 0.0, "PVC": 0.0}, rng, 10.0)
        sinus = times.copy()
        is_pvc = synth._place_pvcs(times, rng, 10.0)
        assert 1 <= is_pvc.sum() <= 3
        for k in np.flatnonzero(is_pvc):
            assert times[k] - times[k - 1] < 0.7 * (sinus[k] - sinus[k - 1])
            assert times[k + 1] == sinus[k + 1]


# ---------------------------------------------------------------- labels and reports


def test_code_cooccurrence() -> None:
    rng = np.random.default_rng(0)
    samples = [sample_codes(rng) for _ in range(4000)]
    counts = Counter(c for s in samples for c in s)
    assert 0.38 < counts["NORM"] / 4000 < 0.48
    for s in samples:
        assert sum(c in RHYTHMS for c in s) == 1
        assert not {"CLBBB", "CRBBB"} <= s.keys()
        assert "NORM" not in s or len(s) == 2
    assert all(counts[c] > 100 for c in ("AFIB", "AFLT", "1AVB", "CLBBB", "CRBBB", "LAFB", "LVH", "LVOLT", "STE_",
                                         "STD_", "INVT", "PVC", "SBRAD", "STACH"))


def _recovered(text: str, table: dict[str, tuple[str, ...]], extra_norm: tuple[str, ...] = ()) -> set[str]:
    found = set()
    for code, phrases in table.items():
        options = phrases + (extra_norm if code == "NORM" else ())
        if any(re.search(rf"(?<![\w-]){re.escape(p.lower())}(?![\w-])", text.lower()) for p in options):
            found.add(code)
    return found


def test_reports_state_every_finding() -> None:
    rng = np.random.default_rng(1)
    for _ in range(500):
        codes = sample_codes(rng)
        text = ptbxl_report(codes, rng)
        assert text == text.lower() and text.endswith(".")
        assert _recovered(text, PTBXL_PHRASES, PTBXL_NORM_AFTER_RATE) == set(codes)
        lines = mimic_statements(codes, rng)
        assert lines[-1] in ("Normal ECG", "Abnormal ECG", "Borderline ECG")
        assert all(s[0].isupper() or s[0].isdigit() for s in lines)
        assert _recovered(". ".join(lines[:-1]), MIMIC_PHRASES) == set(codes) - {"NORM"}
        assert (lines[-1] == "Normal ECG") == ("NORM" in codes)


def test_phrases_never_contain_another_codes_phrase() -> None:
    for table in (PTBXL_PHRASES, MIMIC_PHRASES):
        for code, phrases in table.items():
            for other, others in table.items():
                if other != code:
                    for p in phrases:
                        assert _recovered(p, {other: others}) == set(), (p, other)


# ---------------------------------------------------------------- on-disk formats


def test_fast_writer_matches_wrsamp(tmp_path: Path) -> None:
    x = synthesize(1, seed=2).signals[0].astype(np.float64)
    x[3, 100:140] = np.nan
    wfdb_io.write_record(tmp_path / "fast" / "r1", x, 500, synth.PTBXL_LEADS, 1000.0)
    adc = wfdb_io.to_adu(x, 1000.0)
    wfdb.wrsamp("r1", fs=500, units=["mV"] * 12, sig_name=list(synth.PTBXL_LEADS), d_signal=adc.astype(np.int64),
                fmt=["16"] * 12, adc_gain=[1000.0] * 12, baseline=[0] * 12, write_dir=str(tmp_path))
    assert (tmp_path / "fast" / "r1.dat").read_bytes() == (tmp_path / "r1.dat").read_bytes()
    ours, theirs = wfdb.rdrecord(str(tmp_path / "fast" / "r1")), wfdb.rdrecord(str(tmp_path / "r1"))
    assert ours.checksum == theirs.checksum and ours.init_value == theirs.init_value
    np.testing.assert_array_equal(ours.p_signal, theirs.p_signal)
    finite = np.isfinite(x.T)
    assert np.isnan(ours.p_signal[~finite]).all()
    assert np.abs(ours.p_signal[finite] - x.T[finite]).max() <= 0.5e-3 + 1e-9


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _header(path: Path) -> list[str]:
    with open(path, encoding="utf-8", newline="") as f:
        return next(csv.reader(f))


@pytest.fixture(scope="module")
def ptbxl_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("ptbxl"), "ptbxl", 70, seed=9, workers=2)


def test_ptbxl_dataset(ptbxl_root: Path) -> None:
    assert _header(ptbxl_root / "ptbxl_database.csv") == _header(FIXTURES / "ptbxl-mini" / "ptbxl_database.csv")
    scp = (FIXTURES / "ptbxl-mini" / "scp_statements.csv").read_bytes()
    assert (ptbxl_root / "scp_statements.csv").read_bytes() == scp
    rows = _csv(ptbxl_root / "ptbxl_database.csv")
    ref = synthesize(70, seed=9)
    fold_of: dict[str, str] = {}
    for row, codes, report, x in zip(rows, ref.codes, ref.reports, ref.signals):
        assert ast.literal_eval(row["scp_codes"]) == codes and row["report"] == report
        assert fold_of.setdefault(row["patient_id"], row["strat_fold"]) == row["strat_fold"]
        assert 1 <= int(row["strat_fold"]) <= 10 and row["patient_id"].endswith(".0")
        hr = wfdb.rdrecord(str(ptbxl_root / row["filename_hr"]))
        assert hr.fs == 500 and hr.sig_len == 5000 and hr.sig_name == list(synth.PTBXL_LEADS)
        assert np.abs(hr.p_signal.T - x).max() <= 1e-3
        lr = wfdb.rdrecord(str(ptbxl_root / row["filename_lr"]))
        assert lr.fs == 100 and lr.sig_len == 1000 and lr.sig_name == list(synth.PTBXL_LEADS)
        assert np.abs(lr.p_signal - synth.decimate5(hr.p_signal.T).T).max() < 3e-3  # anti-aliased 500 -> 100 Hz
    assert len(fold_of) < len(rows)  # some patients have several records


def test_ptbxl_dataset_independent_of_workers(ptbxl_root: Path, tmp_path: Path) -> None:
    other = write_dataset(tmp_path / "one", "ptbxl", 70, seed=9, workers=1)
    for rel in ("ptbxl_database.csv", "records500/00000/00042_hr.dat", "records100/00000/00069_lr.hea"):
        assert (other / rel).read_bytes() == (ptbxl_root / rel).read_bytes()


def test_mimic_dataset(tmp_path: Path) -> None:
    root = write_dataset(tmp_path, "mimic", 48, seed=4, workers=2)
    fixture = FIXTURES / "mimic-iv-ecg-meta"
    for name in ("record_list.csv", "machine_measurements.csv"):
        assert _header(root / name) == _header(fixture / name)
    records, machine = _csv(root / "record_list.csv"), _csv(root / "machine_measurements.csv")
    assert [r["study_id"] for r in records] != [m["study_id"] for m in machine]  # join on study_id, not row order
    by_study = {m["study_id"]: m for m in machine}
    ref = synthesize(48, seed=4, site="mimic")
    ref_by_path = dict(zip(synth._mimic_ids(48, 4)[1].astype(str), ref.signals))
    gaps = 0
    for r in records:
        m = by_study[r["study_id"]]
        assert m["subject_id"] == r["subject_id"] and r["file_name"] == r["study_id"]
        assert re.fullmatch(rf"files/p{r['subject_id'][:4]}/p{r['subject_id']}/s{r['study_id']}/{r['study_id']}",
                            r["path"])
        reports = [m[f"report_{k}"] for k in range(18)]
        filled = [k for k, s in enumerate(reports) if s]
        gaps += filled[-1] + 1 != len(filled)
        assert reports[filled[-1]] in ("Normal ECG", "Abnormal ECG", "Borderline ECG")
        rec = wfdb.rdrecord(str(root / r["path"]))
        assert rec.fs == 500 and rec.sig_len == 5000 and rec.sig_name == list(synth.MIMIC_LEADS)
        assert rec.adc_gain == [200.0] * 12 and rec.base_date is not None
        x = ref_by_path[r["study_id"]]
        got = rec.p_signal.T[[synth.MIMIC_LEADS.index(n) for n in ("I", "II", "III", "aVR", "aVL", "aVF")] +
                             list(range(6, 12))]
        ok = np.isfinite(got)
        assert np.abs(got[ok] - x[ok]).max() <= 5e-3  # 200 adu/mV: within one adu (5 uV)
    assert gaps > 0


def test_mimic_nan_runs() -> None:
    rng = np.random.default_rng(0)
    fractions = []
    for _ in range(2000):
        x = np.zeros((12, 5000))
        synth._add_nan_runs(x, rng)
        fractions.append(np.isnan(x).mean())
    fractions = np.array(fractions)
    assert 0.02 < ((fractions > 0) & (fractions < 0.1)).mean() < 0.1
    assert 0.001 < (fractions > 0.5).mean() < 0.02


def test_cli_and_benchmark(tmp_path: Path) -> None:
    data_main(["synth", "--out", str(tmp_path / "d"), "--format", "ptbxl", "--n", "5", "--seed", "1", "--workers", "1"])
    assert len(_csv(tmp_path / "d" / "ptbxl_database.csv")) == 5
    result = synth.benchmark(n=8, workers=1)
    assert result["records_per_s"] > 0 and result["n"] == 8

