"""Paper-ECG rendering: geometry, digitised-back fidelity, artefacts, image loading, the render CLI."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from meit.data import render as R
from meit.data.image_io import ARTEFACT_ORDER, ImageError, load_ecg_image
from meit.data.records import STANDARD_LEADS

FS = 500


def beats(fs: float = FS, seconds: float = 10.0, seed: int = 0) -> np.ndarray:
    """An independent sum-of-Gaussians 12-lead ECG (mV): P, QRS, T per lead, limb leads by Einthoven/Goldberger."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * fs)) / fs
    rr = 60.0 / rng.uniform(55, 95)
    waves = {"P": (-0.17, 0.02), "Q": (-0.03, 0.01), "R": (0.0, 0.012), "S": (0.035, 0.012), "T": (0.28, 0.05)}
    amp = {  # lead -> amplitudes of P, Q, R, S, T
        "I": (0.1, -0.05, 0.8, -0.1, 0.25), "II": (0.15, -0.08, 1.2, -0.2, 0.35),
        "V1": (0.08, 0.0, 0.3, -1.0, -0.1), "V2": (0.1, 0.0, 0.6, -1.3, 0.5), "V3": (0.1, -0.05, 0.9, -0.8, 0.5),
        "V4": (0.1, -0.1, 1.4, -0.4, 0.45), "V5": (0.1, -0.1, 1.2, -0.2, 0.35), "V6": (0.1, -0.08, 0.9, -0.1, 0.3),
    }
    leads = {}
    for lead, a in amp.items():
        x = np.zeros_like(t)
        for beat in np.arange(0.4 + rng.uniform(0, 0.2), seconds + 0.5, rr):
            for k, (offset, width) in zip(a, waves.values(), strict=True):
                x += k * np.exp(-0.5 * ((t - beat - offset) / width) ** 2)
        leads[lead] = x
    i, ii = leads["I"], leads["II"]
    leads.update(III=ii - i, aVR=-(i + ii) / 2, aVL=i - ii / 2, aVF=ii - i / 2)
    return np.stack([leads[name] for name in STANDARD_LEADS]).astype(np.float32)


def pixel_reference(signal: np.ndarray, fs: float, t: np.ndarray, px_per_s: float) -> np.ndarray:
    """The signal resampled to the pixel grid: the middle of the drawn polyline's extent in each pixel column.

    A column inks the polyline from its lowest to its highest point inside the column, so the
    mid-range (not the mean) is what one column can show; they differ where noise is sub-pixel.
    """
    offsets = (np.arange(10) - 4.5) / (10 * px_per_s)
    fine = np.interp(t[:, None] + offsets[None, :], np.arange(signal.size) / fs, signal)
    return (fine.max(axis=1) + fine.min(axis=1)) / 2


def digitised_correlations(signal: np.ndarray, fs: float, cfg: R.RenderConfig, seed: int = 0,
                           min_std: float = 0.0) -> dict[str, float]:
    """Per panel: correlation of the digitised trace with the signal (panels whose signal std < min_std mV omitted)."""
    layout = R.page_layout(cfg)
    traces = R.digitise(R.render(signal, fs, cfg, seed), layout)
    out = {}
    for p in layout.panels:
        t, mv = traces[p.name]
        ok = np.isfinite(mv)
        assert ok.mean() > 0.98, f"{p.name}: trace missing in {1 - ok.mean():.0%} of the columns"
        ref = pixel_reference(signal[p.lead], fs, t[ok], layout.px_per_s)
        high, low = (p.baseline - p.top) / layout.px_per_mv, (p.baseline - p.bottom) / layout.px_per_mv
        clipped = (ref > high - 0.1) | (ref < low + 0.1)
        inside = np.convolve(clipped, np.ones(5), mode="same") == 0  # columns near a clipped spike are not compared
        if ref[inside].std() >= min_std:
            out[p.name] = float(np.corrcoef(mv[ok][inside], ref[inside])[0, 1])
        offset = float(np.median(mv[ok][inside] - ref[inside]))
        assert abs(offset) < 0.02, f"{p.name}: baseline off by {offset:.3f} mV"
    return out


# ------------------------------------------------------------------------------ geometry


@pytest.mark.parametrize("dpi", [100, 200])
def test_page_size_and_scales(dpi):
    cfg = R.RenderConfig(dpi=dpi)
    layout = R.page_layout(cfg)
    assert (layout.width, layout.height) == (round(11 * dpi), round(8.5 * dpi))
    assert layout.px_per_mm == pytest.approx(dpi / 25.4)
    assert layout.px_per_s == pytest.approx(25 * dpi / 25.4)
    names = [p.name for p in layout.panels]
    assert names == ["I", "aVR", "V1", "V4", "II", "aVL", "V2", "V5", "III", "aVF", "V3", "V6", "II_rhythm"]
    for p in layout.panels[:12]:
        col = ["I", "aVR", "V1", "V4", "II", "aVL", "V2", "V5", "III", "aVF", "V3", "V6"].index(p.name) % 4
        assert (p.t0, p.t1) == (2.5 * col, 2.5 * (col + 1))
        assert p.x1 - p.x0 == pytest.approx(62.5 * layout.px_per_mm)
    rhythm = layout.panel("II_rhythm")
    assert (rhythm.t0, rhythm.t1, STANDARD_LEADS[rhythm.lead]) == (0.0, 10.0, "II")
    assert rhythm.x1 - rhythm.x0 == pytest.approx(250 * layout.px_per_mm)
    assert 0 < layout.calibration_x and rhythm.x1 < layout.width


@pytest.mark.parametrize("dpi", [100, 200])
def test_grid_lines_are_1_mm_and_5_mm_apart(dpi):
    cfg = R.RenderConfig(dpi=dpi)
    layout = R.page_layout(cfg)
    page = R.render(np.zeros((12, 5000), np.float32), FS, cfg)
    strip = page[: int(8 * layout.px_per_mm)]  # the top margin: grid only, no ink
    major = np.all(strip == (235, 120, 120), axis=2).mean(axis=0) > 0.9
    any_line = np.any(strip != 255, axis=2).mean(axis=0) > 0.9
    starts = lambda mask: np.flatnonzero(mask & ~np.concatenate(([False], mask[:-1])))  # noqa: E731
    major_gaps, minor_gaps = np.diff(starts(major)), np.diff(starts(any_line))
    assert major_gaps.mean() == pytest.approx(5 * layout.px_per_mm, abs=0.05)
    assert np.abs(major_gaps - 5 * layout.px_per_mm).max() <= 1.0
    assert minor_gaps.mean() == pytest.approx(layout.px_per_mm, abs=0.05)
    assert abs(starts(major) - layout.grid_origin[0]).min() <= 1.0  # the trace starts on a major line


@pytest.mark.parametrize(("dpi", "gain"), [(100, 10.0), (200, 10.0), (100, 20.0)])
def test_calibration_pulse_is_1_mv_by_200_ms(dpi, gain):
    cfg = R.RenderConfig(dpi=dpi, mm_per_mv=gain, show_labels=False, separators=False)
    layout = R.page_layout(cfg)
    page = R.render(np.zeros((12, 5000), np.float32), FS, cfg)
    ppm = layout.px_per_mm
    x0, base = layout.calibration_x, layout.row_baselines[0]
    band = layout.panels[0]
    ink = np.zeros(page.shape[:2], dtype=bool)
    ink[int(band.top) : int(band.bottom)] = page[int(band.top) : int(band.bottom)].max(axis=2) < 128  # row 1 only

    def centre(pixels: np.ndarray) -> float:  # centre of the ink run, in continuous pixel coordinates
        return float(np.flatnonzero(pixels).mean() + 0.5)

    top = centre(ink[:, int(x0 + 5 * ppm)])  # middle of the pulse: only its top edge is inked
    lead_in = centre(ink[:, int(x0 + 1 * ppm)])  # before the pulse: the baseline
    assert lead_in == pytest.approx(base, abs=1.0)
    assert lead_in - top == pytest.approx(gain * ppm, abs=1.0)  # 1 mV = 10 mm (gain mm)
    mid_row = ink[int(base - gain * ppm / 2), int(x0) : int(x0 + 9.5 * ppm)]
    runs = np.split(np.flatnonzero(mid_row), np.flatnonzero(np.diff(np.flatnonzero(mid_row)) > 1) + 1)
    assert len(runs) == 2  # the rising and the falling edge
    assert runs[1].mean() - runs[0].mean() == pytest.approx(5 * ppm, abs=1.0)  # 200 ms at 25 mm/s = 5 mm


def test_page_too_small_and_bad_signals_fail_clearly():
    with pytest.raises(ValueError, match="page width"):
        R.page_layout(R.RenderConfig(page_size_mm=(210, 297)))
    with pytest.raises(ValueError, match=r"\(12, T\)"):
        R.render(np.zeros((8, 1000)), FS)
    with pytest.raises(ValueError, match="sampling rate"):
        R.render(np.zeros((12, 1000)), 0)


# ---------------------------------------------------------------------- drawn = claimed


@pytest.mark.parametrize(
    ("fs", "cfg"),
    [(500, R.RenderConfig()), (100, R.RenderConfig(grid_colour="random")),
     (500, R.RenderConfig(black_and_white=True, dpi=150))],
    ids=["red-500Hz", "random-grid-100Hz", "bw-150dpi"],
)
def test_digitised_trace_matches_signal(fs, cfg):
    signal = beats(fs, seed=fs)
    corr = digitised_correlations(signal, fs, cfg, seed=3)
    assert min(corr.values()) > 0.95, corr


@pytest.mark.parametrize("gain", [10.0, 5.0])
def test_slow_waves_come_back_at_the_drawn_gain_in_the_right_panels(gain):
    t = np.arange(5000) / FS
    amplitude, freq = np.linspace(0.3, 1.4, 12), np.linspace(0.4, 1.5, 12)  # every lead different
    signal = (amplitude[:, None] * np.sin(2 * np.pi * freq[:, None] * t + np.arange(12)[:, None])).astype(np.float32)
    cfg = R.RenderConfig(mm_per_mv=gain)
    layout = R.page_layout(cfg)
    traces = R.digitise(R.render(signal, FS, cfg), layout)
    for p in layout.panels:
        times, mv = traces[p.name]
        ref = pixel_reference(signal[p.lead], FS, times, layout.px_per_s)
        slope, intercept = np.polyfit(ref, mv, 1)
        assert slope == pytest.approx(1.0, abs=0.02) and abs(intercept) < 0.01, (p.name, slope, intercept)
        assert np.corrcoef(ref, mv)[0, 1] > 0.999


def test_digitised_synthetic_records_match():
    synth = pytest.importorskip("meit.data.synth")
    batch = synth.synthesize(3, seed=1, fs=FS)
    for signal in batch.signals:
        corr = digitised_correlations(signal, FS, R.RenderConfig(clip_traces=True))
        assert min(corr.values()) > 0.9, corr
        # sub-pixel noise on near-flat leads is beyond 100 dpi (1 px = 10 ms, 0.025 mV); every lead that moves:
        corr = digitised_correlations(signal, FS, R.RenderConfig(clip_traces=True), min_std=0.1)
        assert len(corr) >= 8 and min(corr.values()) > 0.95, corr


def test_columns_show_consecutive_windows_and_nan_leaves_a_gap():
    signal = np.zeros((12, 5000), np.float32)
    signal[:, 1250:2500] = 1.0  # 2.5 .. 5 s: only the second column (and the rhythm strip) is raised
    signal[1, 4000:4500] = np.nan  # lead II, 8 .. 9 s: a gap in the rhythm strip
    layout = R.page_layout()
    traces = R.digitise(R.render(signal, FS), layout)
    for name in ("I", "V1", "V4", "III", "V6"):
        assert np.nanmax(np.abs(traces[name][1])) < 0.1
    for name in ("aVR", "aVL", "aVF"):
        assert np.nanmedian(traces[name][1]) == pytest.approx(1.0, abs=0.05)
    t, mv = traces["II_rhythm"]
    assert np.isnan(mv[(t > 8.05) & (t < 8.95)]).all() and np.isfinite(mv[(t > 1) & (t < 7.9)]).all()


# -------------------------------------------------------------------------------- artefacts


@pytest.mark.parametrize("name", ARTEFACT_ORDER)
def test_each_artefact_is_seeded_and_changes_the_image(name):
    signal = beats(seed=1)
    clean = R.render(signal, FS, R.RenderConfig(), seed=4)
    cfg = R.RenderConfig(artefacts={name: 0.7})
    first, again, other = (R.render(signal, FS, cfg, seed=s) for s in (4, 4, 5))
    assert first.shape == clean.shape and first.dtype == np.uint8
    assert np.array_equal(first, again)
    assert np.abs(first.astype(int) - clean).mean() > 0.5
    if name not in ("grayscale", "jpeg"):  # the deterministic ones
        assert not np.array_equal(first, other)
    assert np.array_equal(R.render(signal, FS, R.RenderConfig(artefacts={name: 0.0}), seed=4), clean)


def test_artefact_specs_order_and_errors():
    a = R.RenderConfig(artefacts=["blur=0.3", "rotation"])
    b = R.RenderConfig(artefacts={"rotation": 0.5, "blur": 0.3})
    assert a.artefacts == b.artefacts == (("rotation", 0.5), ("blur", 0.3))
    with pytest.raises(ValueError, match="unknown artefact: smudge; choose from .*blur.*rotation"):
        R.RenderConfig(artefacts=["smudge"])
    with pytest.raises(ValueError, match=r"strength must be in \[0, 1\]"):
        R.RenderConfig(artefacts={"blur": 1.5})


def test_random_grid_black_and_white_and_batch():
    signal = beats(seed=2)
    bw = R.render(signal, FS, R.RenderConfig(black_and_white=True))
    assert np.array_equal(bw[..., 0], bw[..., 1]) and np.array_equal(bw[..., 1], bw[..., 2])
    random_cfg = R.RenderConfig(grid_colour="random")
    assert not np.array_equal(R.render(signal, FS, random_cfg, seed=0), R.render(signal, FS, random_cfg, seed=1))
    batch = R.render_batch(torch.from_numpy(np.stack([signal, beats(seed=3)])), FS, random_cfg, seed=7)
    assert batch.shape == (2, 850, 1100, 3)
    assert np.array_equal(batch[1], R.render(beats(seed=3), FS, random_cfg, seed=R.item_seed(7, 1)))


def test_image_transform_on_the_fly():
    noise = lambda x, rng: x + rng.normal(0, 0.05, x.shape).astype(np.float32)  # noqa: E731
    transform = R.ImageTransform(FS, R.RenderConfig(artefacts=["blur"]), size=(224, 290), seed=1,
                                 signal_transform=noise)
    item = {"id": "17", "ecg": torch.from_numpy(beats(seed=4)), "report": "x"}
    out, again = transform(item), transform(item)
    assert out["image"].shape == (3, 224, 290) and out["image"].dtype == torch.float32
    assert 0.0 <= out["image"].min() and out["image"].max() <= 1.0
    assert torch.equal(out["image"], again["image"]) and out["report"] == "x"


def test_benchmark_reports_speed():
    result = R.benchmark(n=6)
    assert (result["n"], result["height"], result["width"]) == (6, 850, 1100)
    assert result["images_per_s"] > 0 and result["ms_per_image"] > 0


# ------------------------------------------------------------------------------ image input


def _png(tmp_path, mode, size=(40, 30), colour=None):
    path = tmp_path / f"page_{mode}.png"
    Image.new(mode, size, colour if colour is not None else 0).save(path)
    return path


@pytest.mark.parametrize("mode", ["RGBA", "L", "P", "LA", "I;16", "1"])
def test_load_converts_modes_with_a_notice(tmp_path, caplog, mode):
    path = _png(tmp_path, mode)
    with caplog.at_level(logging.WARNING, logger="meit.data.image_io"):
        image = load_ecg_image(path)
    assert image.shape == (3, 30, 40) and image.dtype == torch.float32
    assert str(path) in caplog.text and f"converted mode {mode} to RGB" in caplog.text


def test_transparent_areas_become_white_and_cmyk_converts(tmp_path, caplog):
    rgba = tmp_path / "t.png"
    Image.new("RGBA", (10, 10), (0, 0, 0, 0)).save(rgba)
    assert torch.allclose(load_ecg_image(rgba), torch.ones(3, 10, 10))
    cmyk = tmp_path / "c.tiff"
    Image.new("CMYK", (12, 8), (0, 255, 255, 0)).save(cmyk)  # pure red ink
    image = load_ecg_image(cmyk)
    assert image[0].mean() > 0.9 and image[1].mean() < 0.1 and "converted mode CMYK" in caplog.text


def test_load_resizes_with_a_notice_and_keeps_rgb_quiet(tmp_path, caplog):
    path = _png(tmp_path, "RGB", size=(1100, 850), colour=(10, 200, 30))
    with caplog.at_level(logging.WARNING, logger="meit.data.image_io"):
        same = load_ecg_image(path, size=(850, 1100))
        assert caplog.text == ""
        small = load_ecg_image(path, size=(224, 290))
    assert same.shape == (3, 850, 1100) and small.shape == (3, 224, 290)
    assert "resized from 850x1100 to 224x290" in caplog.text and str(path) in caplog.text
    assert small[1].mean().item() == pytest.approx(200 / 255, abs=1e-3)


def test_unreadable_files_name_the_file(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ImageError, match=r"notes\.png: not a readable image"):
        load_ecg_image(text)
    good = _png(tmp_path, "RGB", size=(300, 200))
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(good.read_bytes()[:-60])
    with pytest.raises(ImageError, match=r"cut\.png"):
        load_ecg_image(truncated)
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        load_ecg_image(tmp_path / "missing.png")


# ------------------------------------------------------------------------------------ CLI


def test_render_cli_writes_pngs_named_by_record_id(tmp_path, capsys):
    synth = pytest.importorskip("meit.data.synth")
    pytest.importorskip("meit.data.sources")
    from meit.data.__main__ import main
    from meit.data.sources import open_source

    root = synth.write_dataset(tmp_path / "ptbxl", "ptbxl", 4, seed=0, workers=1)
    out = tmp_path / "images"
    main(["render", "--dataset", "ptbxl", "--root", str(root), "--out", str(out), "--limit", "3",
          "--artefacts", "rotation", "blur=0.2", "--seed", "5", "--workers", "2", "--sampling-rate", "100"])
    ids = [r.record_id for r in open_source("ptbxl", root, 100).records[:3]]
    assert sorted(p.name for p in out.glob("*.png")) == sorted(f"{i}.png" for i in ids)
    summary = json.loads((out / "render.json").read_text())
    assert summary["summary"]["rendered"] == 3 and summary["config"]["artefacts"] == [["rotation", 0.5], ["blur", 0.2]]
    assert "rendered 3 images" in capsys.readouterr().out
    first = np.asarray(Image.open(out / f"{ids[0]}.png"))
    assert first.shape == (850, 1100, 3)
    main(["render", "--dataset", "ptbxl", "--root", str(root), "--out", str(out), "--limit", "3", "--workers", "1"])
    assert "rendered 0 images (3 already there" in capsys.readouterr().out
