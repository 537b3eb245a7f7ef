"""Input quality for `meit.report` (issue 12 item 7): what cannot be an ECG is refused with its reason, doubtful
inputs get warnings, a header cannot make the reader allocate GBs, and model-loading failures are clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import STANDARD, wrsamp
from PIL import Image

from meit.data.quality import InputQualityError, check_image, check_signal
from meit.data.records import RecordError, read_standard_leads
from meit.report import main as report_main
from meit.report import read_input

REPO = Path(__file__).resolve().parents[1]
RECORD = REPO / "tests" / "fixtures" / "ptbxl-mini" / "records100" / "00000" / "00001_lr"


def _signal_cfg(rate: int = 100, n_samples: int = 1000) -> SimpleNamespace:
    return SimpleNamespace(model=SimpleNamespace(branch="signal"),
                           data=SimpleNamespace(sampling_rate=rate, n_samples=n_samples))


def _copy_header(tmp_path: Path) -> Path:
    shutil.copy(RECORD.with_suffix(".hea"), tmp_path / "00001_lr.hea")
    return tmp_path / "00001_lr"


def test_the_real_ptbxl_record_passes_without_a_warning():
    signal, fs, _ = read_standard_leads(RECORD)
    assert check_signal(signal, fs).warnings == []
    ecg, quality = read_input(RECORD, _signal_cfg())
    assert tuple(ecg.shape) == (12, 1000) and quality.ok


def test_random_bytes_under_a_valid_header_are_refused_as_noise(tmp_path):
    record = _copy_header(tmp_path)
    size = RECORD.with_suffix(".dat").stat().st_size
    record.with_suffix(".dat").write_bytes(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes())
    with pytest.raises(InputQualityError) as caught:
        read_input(record, _signal_cfg())
    assert "00001_lr" in str(caught.value) and "noise-like" in str(caught.value)


def test_a_flat_record_is_refused_and_a_flat_lead_is_a_warning(tmp_path):
    wrsamp(tmp_path / "flat", np.zeros((12, 1000)), 100, STANDARD)
    with pytest.raises(InputQualityError, match="all 12 leads are flat"):
        read_input(tmp_path / "flat", _signal_cfg())
    signal, fs, _ = read_standard_leads(RECORD)
    signal = signal.copy()
    signal[7] = 0.0
    quality = check_signal(signal, fs)
    assert not quality.refused and [w.reason for w in quality.warnings] == ["flat_leads"]
    assert "V2" in quality.warnings[0].detail


def test_a_signal_in_the_wrong_units_and_an_implausible_rate_are_warned():
    signal, fs, _ = read_standard_leads(RECORD)
    quality = check_signal(signal * 1000.0, fs)  # µV read as mV
    assert "amplitude" in [w.reason for w in quality.warnings]
    slow = check_signal(signal, fs / 5)  # the same samples declared at 20 Hz: 13 bpm
    reasons = [w.reason for w in slow.warnings]
    assert reasons == ["heart_rate"] and "outside 25..250 bpm" in slow.warnings[0].detail


def test_tiny_and_blank_images_are_refused_or_warned():
    assert check_image(np.ones((3, 1, 1))).refused
    small = check_image(np.random.default_rng(0).random((3, 150, 150)))
    assert not small.refused and [w.reason for w in small.warnings] == ["small_image"]
    assert [w.reason for w in check_image(np.ones((3, 512, 512))).warnings] == ["constant_image"]


def test_a_1x1_png_is_refused_by_an_image_run(tmp_path, monkeypatch):
    import torch

    import meit.report

    png = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), "white").save(png)
    monkeypatch.setattr(meit.report, "image_input", lambda path, cfg: torch.ones(3, 224, 224))
    image = SimpleNamespace(size=(224, 224))
    cfg = SimpleNamespace(model=SimpleNamespace(branch="image"), data=SimpleNamespace(image=image))
    with pytest.raises(InputQualityError, match="1x1 pixels"):
        read_input(png, cfg)


def test_a_header_declaring_millions_of_samples_is_refused_before_reading(tmp_path):
    header = RECORD.with_suffix(".hea").read_text().splitlines()
    fields = header[0].split()
    fields[2], fields[3] = "0.01", "5000000"  # 5 M samples at 0.01 Hz: 1.5 GB if read
    (tmp_path / "00001_lr.hea").write_text("\n".join([" ".join(fields), *header[1:]]) + "\n")
    shutil.copy(RECORD.with_suffix(".dat"), tmp_path / "00001_lr.dat")
    with pytest.raises(RecordError) as caught:
        read_standard_leads(tmp_path / "00001_lr")
    assert "00001_lr.hea" in str(caught.value) and "0.01 Hz" in str(caught.value)
    fields[2], fields[3] = "500", "5000000"  # a plausible rate, but 10,000 s
    (tmp_path / "00001_lr.hea").write_text("\n".join([" ".join(fields), *header[1:]]) + "\n")
    with pytest.raises(RecordError, match="longer than 600 s"):
        read_standard_leads(tmp_path / "00001_lr")


def test_report_cli_refuses_a_non_ecg_and_explains_a_model_load_failure(tmp_path, capsys, monkeypatch):
    import meit.report

    monkeypatch.setattr(meit.report, "_run_config", lambda run, trust=False: _signal_cfg())
    wrsamp(tmp_path / "flat", np.zeros((12, 1000)), 100, STANDARD)
    assert report_main([str(tmp_path / "flat"), "--run", str(tmp_path)]) == 2
    assert "not usable as an ECG" in capsys.readouterr().err

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load this file")

    monkeypatch.setattr(meit.report, "load_run", offline)
    assert report_main([str(RECORD), "--run", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"could not load the run {tmp_path}" in err and "couldn't connect" in err and "Traceback" not in err


def test_report_json_carries_the_quality_warnings(tmp_path, capsys, monkeypatch):
    import meit.report

    signal, fs, _ = read_standard_leads(RECORD)
    signal = signal.copy()
    signal[7] = 0.0
    wrsamp(tmp_path / "lead_off", signal, fs, STANDARD)
    monkeypatch.setattr(meit.report, "_run_config", lambda run, trust=False: _signal_cfg())
    monkeypatch.setattr(meit.report, "report_with_quality", lambda record, run, *a, **k: (
        "sinus rhythm.", read_input(record, _signal_cfg())[1]))
    assert report_main([str(tmp_path / "lead_off"), "--run", str(tmp_path), "--json"]) == 0
    out = capsys.readouterr()
    payload = json.loads(out.out)
    assert payload["report"] == "sinus rhythm." and not payload["quality"]["ok"]
    assert payload["quality"]["warnings"][0]["reason"] == "flat_leads"
    assert "warning:" in out.err and "V2" in out.err
