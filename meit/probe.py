"""`python -m meit.probe --run RUN_DIR`: what the run's frozen ECG encoder knows, as a linear probe's label scores.

A multi-label logistic regression is trained on the mean-pooled ECG tokens (encoder + projector, frozen) of the
train split and scored on the test split (the run's `test.limit` records) with the generated reports' label metric
(eval/label_metrics.py): `probe_label_macro_f1` and `probe_label_auc` are added to RUN_DIR/metrics.json and
report.md. Labels are the dataset's SCP codes, or those `extract_labels` finds in the report where a record has none.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from meit.eval.label_metrics import build_label_stats
from meit.runs.rundir import (
    METRICS,
    REPORT,
    add_load_flags,
    load_flags,
    load_run,
    read_run_json,
    read_run_text,
)
from meit.tasks.align import label_targets, record_labels
from meit.tasks.datamodule import MEITDataModule
from meit.util.atomic import write_json, write_text
from meit.util.errors import UserFacingError

PROBE_STEPS = 300
PROBE_LR = 0.05
PROBE_WEIGHT_DECAY = 1e-4
PROBE_HEADING = "\n## Encoder probe\n"


@torch.no_grad()
def features(module: Any, dm: MEITDataModule, split: str, limit: int | None) -> tuple[torch.Tensor, list[set[str]]]:
    """Mean-pooled ECG tokens (N, hidden) of a split and each record's label set."""
    feats, labels = [], []
    for batch in dm.predict_dataloader(split, limit):
        feats.append(module.net.encode_ecg(batch["ecg"].to(module.device)).float().mean(dim=1).cpu())
        labels += [record_labels(codes, report) for codes, report in zip(batch["labels_true"], batch["reports"])]
    return torch.cat(feats), labels


def train_probe(x: torch.Tensor, labels: list[set[str]], space: list[str], seed: int = 0) -> torch.nn.Linear:
    """A linear multi-label head (BCE, full batch, Adam) on standardised features; `x` is standardised already."""
    y = label_targets(labels, space)
    gen = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(x.shape[1], len(space))
    torch.nn.init.normal_(head.weight, std=0.01, generator=gen)
    torch.nn.init.zeros_(head.bias)
    opt = torch.optim.Adam(head.parameters(), lr=PROBE_LR, weight_decay=PROBE_WEIGHT_DECAY)
    for _ in range(PROBE_STEPS):
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(head(x), y).backward()
        opt.step()
    return head


def probe_run(run_dir: str | Path, device: str = "cpu", trust_remote_code: bool = False,
              allow_unverified_backbone: bool = False) -> dict[str, float]:
    """Probes a run's encoder; adds the scores to its metrics.json and report.md and returns them.

    `trust_remote_code` and `allow_unverified_backbone` are the command line's (see `meit.runs.rundir.load_run`).

    Raises:
        FileNotFoundError: the run directory is incomplete (or has no metrics.json: it was run with --test.skip).
        meit.util.errors.UserFacingError: a corrupt run file, an unverifiable backbone or untrusted code.
        ValueError: an image-branch run, or a train split without any label.
    """
    run_dir = Path(run_dir)
    if not (run_dir / METRICS).is_file():
        raise FileNotFoundError(f"{run_dir / METRICS} not found: probe a run that was tested (no --test.skip)")
    module, tokenizer, cfg = load_run(run_dir, device, trust_remote_code, allow_unverified_backbone)
    if cfg.model.branch != "signal":
        raise ValueError(f"{run_dir}: the probe reads signal-branch runs; this one is {cfg.model.branch}")
    dm = MEITDataModule(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    dm.set_collator(module.collator)
    x_train, y_train = features(module, dm, "train", None)
    x_test, y_test = features(module, dm, "test", cfg.test.limit)
    space = sorted(set().union(*y_train))
    if not space:
        raise ValueError(f"{run_dir}: no train record of dataset {cfg.data.dataset} has a label to probe")
    mean, std = x_train.mean(dim=0), x_train.std(dim=0).clamp_min(1e-6)
    head = train_probe((x_train - mean) / std, y_train, space)
    with torch.no_grad():
        probs = torch.sigmoid(head((x_test - mean) / std)).numpy()
    pred = [{c for c, p in zip(space, row) if p >= 0.5} for row in probs]
    prob_dicts = [dict(zip(space, map(float, row))) for row in probs]
    stats = build_label_stats(y_test, pred, prob_dicts)["statement"].aggregate(np.ones((1, len(y_test))))
    scores = {"probe_label_macro_f1": float(stats["label_macro_f1"][0]),
              "probe_label_auc": float(stats["label_auc"][0])}
    metrics = read_run_json(run_dir / METRICS)
    metrics.update(scores)
    write_json(run_dir / METRICS, metrics)
    report = read_run_text(run_dir / REPORT).split(PROBE_HEADING)[0]  # a rerun replaces the section
    write_text(run_dir / REPORT, report + probe_markdown(metrics))
    return scores


def probe_markdown(metrics: dict[str, Any]) -> str:
    """The report.md section: the generated reports' label macro-F1 next to the probe's."""
    probe = metrics["probe_label_macro_f1"]
    text = metrics.get("label_macro_f1")
    line = (f"the text recovers {text:.3f} of the {probe:.3f} the encoder knows (label macro-F1 of the generated "
            f"reports vs a linear probe on the frozen encoder; probe label AUC {metrics['probe_label_auc']:.3f})"
            if isinstance(text, float) else f"probe label macro-F1 {probe:.3f}, AUC {metrics['probe_label_auc']:.3f}")
    return f"{PROBE_HEADING}\n{line}.\n"


def main(argv: list[str] | None = None) -> int:
    """Prints the probe's scores; returns the exit status (2 for an unusable run)."""
    parser = argparse.ArgumentParser(prog="python -m meit.probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="run directory written by `python -m meit.fit`")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    add_load_flags(parser)
    args = parser.parse_args(argv)
    try:
        scores = probe_run(args.run, args.device, **load_flags(args))
    except (FileNotFoundError, ValueError, UserFacingError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
