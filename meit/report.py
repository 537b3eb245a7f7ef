"""`python -m meit.report RECORD_OR_IMAGE --run RUN_DIR`: the report a trained run writes for one ECG.

RECORD is a WFDB record path without extension (e.g. `records100/00000/00001_lr`); its 12 standard leads are
selected by name, resampled to the run's rate and cropped/padded to the run's length, as in training. Image-branch
runs (`--model.branch image`) also read an image file (PNG/JPEG; converted to RGB and resized to the run's
`data.image_size`, with a notice), and render a RECORD like their test pages.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see meit.fit: spinning OpenMP threads stall a shared CPU

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class ImageForSignalRun(ValueError):
    """An image file given to a signal-branch run."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m meit.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("record", help="WFDB record path without extension (.hea/.dat next to it), or an ECG "
                        "image (.png/.jpg) for image-branch runs")
    parser.add_argument("--run", required=True, help="run directory written by `python -m meit.fit`")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--instruction", default=None, help="instruction to use (default: the run's test instruction)")
    from meit.rundir import add_load_flags

    add_load_flags(parser)
    return parser


def generate_report(record: str | Path, run_dir: str | Path, device: str = "cpu",
                    instruction: str | None = None, trust_remote_code: bool = False,
                    allow_unverified_backbone: bool = False) -> str:
    """Loads the run and generates the report of one record (the two flags: see `meit.rundir.load_run`).

    Raises:
        meit.data.records.RecordError: the record is missing or unusable (the message names the file and problem).
        FileNotFoundError: the run directory (or the image file) is incomplete or missing.
        meit.data.image_io.ImageError: the image file is unreadable (the message names it).
        ImageForSignalRun: an image given to a signal-branch run.
        meit.errors.UserFacingError: a corrupt run file, an unverifiable backbone or untrusted code.
    """
    import dataclasses

    import torch

    from meit.data.records import load_signal
    from meit.datamodule import PromptCollator
    from meit.rundir import load_run

    module, tokenizer, cfg = load_run(run_dir, device, trust_remote_code, allow_unverified_backbone)
    data = cfg.data if instruction is None else dataclasses.replace(cfg.data, instruction=instruction)
    if cfg.model.branch == "image":
        from meit.image_branch import image_input

        ecg = image_input(record, cfg)
    elif str(record).lower().endswith(IMAGE_SUFFIXES):
        raise ImageForSignalRun(f"{record} is an image; a signal run reads WFDB records (path without extension)")
    else:
        ecg = torch.from_numpy(load_signal(Path(record), data.sampling_rate, data.n_samples).signal)
    if hasattr(module, "instruction"):
        module.instruction = data.instruction
    item = {"id": str(record), "ecg": ecg, "report": "", "labels": []}
    batch = PromptCollator(tokenizer, data, generate=True)([item])
    ecg, ids, mask = (batch[k].to(device) for k in ("ecg", "input_ids", "attention_mask"))
    return module.generate_reports(ecg, ids, mask)[0]


def main(argv: list[str] | None = None) -> int:
    """Prints the report; returns the exit status (2 for an unusable record or run)."""
    args = build_parser().parse_args(argv)
    from meit.data.image_io import ImageError
    from meit.data.records import RecordError
    from meit.errors import UserFacingError
    from meit.rundir import load_flags

    try:
        print(generate_report(args.record, args.run, args.device, args.instruction, **load_flags(args)))
    except (RecordError, FileNotFoundError, ImageError, ImageForSignalRun, UserFacingError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
