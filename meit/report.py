"""`python -m meit.report RECORD_OR_IMAGE --run RUN_DIR`: the report a trained run writes for one ECG.

RECORD is a WFDB record path without extension (e.g. `records100/00000/00001_lr`); its 12 standard leads are
selected by name, resampled to the run's rate and cropped/padded to the run's length, as in training. Image-branch
runs (`--model.branch image`) also read an image file (PNG/JPEG; converted to RGB and resized to the run's
`data.image.size`, with a notice), and render a RECORD like their test pages.

Before the model is loaded the input's quality is checked (`meit.data.quality`): problems (flat leads, amplitude
out of range, a noise-like spectrum, an implausible heart rate, a small or blank image) are printed on stderr as
`warning: ...` and listed in the `--json` output; an input that cannot be an ECG (every lead flat or noise-like,
an image below the minimum size) is refused with exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from meit.data.image_io import IMAGE_SUFFIXES, ImageError
from meit.data.quality import InputQualityError, Quality, check_image, check_signal
from meit.data.records import RecordError, conform_signal, read_standard_leads
from meit.runs.rundir import CONFIG, add_load_flags, load_flags, load_run, read_config
from meit.tasks.images import image_input
from meit.util.errors import UserFacingError


class ImageForSignalRun(ValueError):
    """An image file given to a signal-branch run."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m meit.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("record", help="WFDB record path without extension (.hea/.dat next to it), or an ECG "
                        "image (.png/.jpg) for image-branch runs")
    parser.add_argument("--run", required=True, help="run directory written by `python -m meit.fit`")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--instruction", default=None, help="instruction to use (default: the run's test instruction)")
    parser.add_argument("--json", action="store_true", help='print {"report": ..., "quality": {"ok": bool, '
                        '"warnings": [{"reason", "detail"}, ...]}} instead of the report text')
    add_load_flags(parser)
    return parser


def _run_config(run_dir: str | Path, trust_remote_code: bool = False) -> Any:
    """The run's config (read before the model, so that a bad input is refused without loading it)."""
    if not (Path(run_dir) / CONFIG).is_file():
        raise FileNotFoundError(f"{Path(run_dir) / CONFIG} not found: is {run_dir} a finished `meit.fit` run "
                                "directory?")
    return read_config(run_dir, trust_remote_code)


def read_input(record: str | Path, cfg: Any) -> tuple[Any, Quality]:
    """The model input of one record or image file for a run's config, and its quality.

    Args:
        record: a WFDB record path without extension, or an image file (image-branch runs).
        cfg: the run's `RunConfig`.

    Returns:
        (the ECG tensor the run's model reads, the input's `Quality`).

    Raises:
        meit.data.quality.InputQualityError: the input cannot be an ECG.
        meit.data.records.RecordError / meit.data.image_io.ImageError / FileNotFoundError: unreadable input.
        ImageForSignalRun: an image given to a signal-branch run.
    """
    image_run = cfg.model.branch == "image"
    if str(record).lower().endswith(IMAGE_SUFFIXES):
        if not image_run:
            raise ImageForSignalRun(f"{record} is an image; a signal run reads WFDB records (path without extension)")
        ecg = image_input(record, cfg)  # raises ImageError for what PIL cannot read
        with Image.open(record) as img:
            quality = check_image(ecg.numpy(), (img.height, img.width))
    else:  # the quality of the record at its own rate; image runs render the record as in training
        signal, fs, _ = read_standard_leads(Path(record), refuse_flat=image_run)
        quality = check_signal(signal, fs)
        if not quality.refused:
            data = cfg.data
            ecg = image_input(record, cfg) if image_run else torch.from_numpy(
                conform_signal(signal, fs, data.sampling_rate, data.n_samples, Path(record)))
    if quality.refused:
        raise InputQualityError(record, f"not usable as an ECG: {quality.refusal}")
    return ecg, quality


def report_with_quality(record: str | Path, run_dir: str | Path, device: str = "cpu",
                        instruction: str | None = None, trust_remote_code: bool = False,
                        allow_unverified_backbone: bool = False) -> tuple[str, Quality]:
    """The report of one record (or image) and the input's quality, checked before the model is loaded.

    The two flags are the current command line's (see `meit.runs.rundir.load_run`); a saved run never sets them.

    Raises:
        The errors of `read_input`; FileNotFoundError / OSError / meit.util.errors.UserFacingError: the run (or the
        backbone it references) cannot be loaded.
    """
    ecg, quality = read_input(record, _run_config(run_dir, trust_remote_code))
    task, _, cfg = load_run(run_dir, device, trust_remote_code, allow_unverified_backbone)
    data = cfg.data if instruction is None else dataclasses.replace(
        cfg.data, prompt=dataclasses.replace(cfg.data.prompt, instruction=instruction))
    item = {"id": str(record), "ecg": ecg, "report": "", "labels": []}
    return task.generate_reports(task.collator(data, generate=True)([item]))[0], quality


def generate_report(record: str | Path, run_dir: str | Path, device: str = "cpu",
                    instruction: str | None = None, trust_remote_code: bool = False,
                    allow_unverified_backbone: bool = False) -> str:
    """Loads the run and generates the report of one record (see `report_with_quality` for the errors)."""
    return report_with_quality(record, run_dir, device, instruction, trust_remote_code, allow_unverified_backbone)[0]


def main(argv: list[str] | None = None) -> int:
    """Prints the report (or `--json`); returns the exit status (2 for an unusable record, image or run)."""
    args = build_parser().parse_args(argv)
    try:
        report, quality = report_with_quality(args.record, args.run, args.device, args.instruction,
                                              **load_flags(args))
    except (UserFacingError, RecordError, FileNotFoundError, ImageError, ImageForSignalRun) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # hub/network or disk trouble while loading the run's model
        print(f"error: could not load the run {args.run}: {error}", file=sys.stderr)
        return 2
    for warning in quality.warnings:
        print(f"warning: {args.record}: {warning.reason}: {warning.detail}", file=sys.stderr)
    print(json.dumps({"report": report, "quality": quality.as_dict()}) if args.json else report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
