"""Load a finished run and generate reports on a dataset split (optionally transformed).

The one prediction path on a saved run, used by `meit.robustness`, `meit.zeroshot`, `meit.compare` and
`meit.report_html`, on top of `meit.runs.rundir.load_run`, the run's task (its `collator` and `generate_reports`
hooks, as in `meit.fit`'s test step) and `meit.data` (splits, signal cache, `ECGReportDataset`); scoring is
`meit.eval.Scorer`'s. Only the requested split is cached, so testing on another dataset never caches its training
split.

A signal transform is called as `transform(signal, rng)` on each float32 (12, T) signal in mV, with a generator
seeded by (seed, record id): the same seed gives the same noisy test set whatever the batch size or order.
For image-branch runs (a task whose `input_kind` is "image") the transformed signal is rendered afterwards,
so noise goes on the signal before rendering.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from meit.config import DataConfig, RunConfig
from meit.data.dataset import ECGReportDataset, SignalTransform
from meit.data.splits import split_records
from meit.runs.rundir import load_run, without_labels
from meit.tasks.base import prediction_rows
from meit.tasks.datamodule import cached_split, open_dataset
from meit.tasks.images import page_renderer

__all__ = ["EvalSplit", "LoadedRun", "SignalTransform", "dataset_config", "dataset_label", "generate",
           "load", "open_split"]


@dataclass
class LoadedRun:
    """A trained model rebuilt from its run directory.

    Attributes:
        run_dir: the run directory.
        module: the `ReportTask`, in eval mode.
        tokenizer: the backbone's tokenizer.
        cfg: the run's configuration.
    """

    run_dir: Path
    module: Any
    tokenizer: Any
    cfg: RunConfig

    @property
    def input_kind(self) -> str:
        """"signal" or "image": what the run's task reads."""
        return self.module.input_kind


@dataclass
class EvalSplit:
    """The records of one split of one dataset, with their cached signals.

    Attributes:
        name: a label for tables ("synthetic-mimic", "ptbxl", ...).
        data_cfg: the data config it was opened with (rate and length are the run's).
        records: records whose signals are usable, in split order (first `limit` only, if given).
        cache: the split's `SignalCache`.
        has_labels: whether the dataset stores SCP labels (PTB-XL); otherwise (MIMIC) the true labels are
            extracted from the reference text by `meit.eval`.
    """

    name: str
    data_cfg: DataConfig
    records: list[Any]
    cache: Any
    has_labels: bool


def load(run_dir: str | Path, device: str = "cpu", trust_remote_code: bool = False,
         allow_unverified_backbone: bool = False) -> LoadedRun:
    """Loads a run directory written by `python -m meit.fit` (see `meit.runs.rundir.load_run`; the two flags are the
    command line's `--trust_remote_code` and `--allow_unverified_backbone`)."""
    module, tokenizer, cfg = load_run(run_dir, device, trust_remote_code, allow_unverified_backbone)
    return LoadedRun(Path(run_dir), module, tokenizer, cfg)


def dataset_config(base: DataConfig, dataset: str | None = None, root: str | Path | None = None,
                   **synthetic: Any) -> DataConfig:
    """The run's data config pointed at another dataset (same rate, length, prompts).

    Args:
        base: the run's data config.
        dataset: "ptbxl", "mimic" or "synthetic" (None keeps the run's).
        root: the dataset root (for ptbxl / mimic).
        **synthetic: overrides of `synthetic_format`, `synthetic_n`, `synthetic_seed`, `split_seed`, `cache_dir`.
    """
    changes: dict[str, Any] = dict(synthetic)
    if dataset is not None:
        changes["dataset"] = dataset
        changes["root"] = None if root is None else str(root)
    return dataclasses.replace(base, **changes)


def dataset_label(cfg: DataConfig) -> str:
    """A short name for a data config: `synthetic-mimic`, `ptbxl`, ..."""
    return f"synthetic-{cfg.synthetic_format}" if cfg.dataset == "synthetic" else cfg.dataset


def open_split(cfg: DataConfig, split: str = "test", limit: int | None = None, workers: int = 1) -> EvalSplit:
    """Opens a dataset, takes one split and caches (once) only that split's signals.

    Args:
        cfg: data config (synthetic data is written once to the cache, as in training).
        split: "train", "val" or "test".
        limit: keep only the first `limit` usable records.
        workers: processes filling the signal cache.

    Raises:
        ValueError: the split is empty.
    """

    source = open_dataset(cfg)
    records = split_records(source, seed=cfg.split_seed, method=cfg.split)[split]
    if not records:
        raise ValueError(f"the {split} split of {source.root} is empty")
    dataset = cached_split(source, records, cfg, split, workers=workers, progress=False)
    return EvalSplit(dataset_label(cfg), cfg, dataset.records[:limit], dataset.cache,
                     any(r.labels for r in source.records))


def generate(run: LoadedRun, split: EvalSplit, transform: SignalTransform | None = None, seed: int = 0,
             batch_size: int | None = None) -> list[dict[str, Any]]:
    """Reports for every record of `split`, as `predictions.jsonl` rows: the task's own collator and decoding
    (greedy, or the run's `test.num_beams`), as in `meit.fit`'s test step.

    Args:
        run: the loaded run.
        split: records to report on.
        transform: optional seeded signal transform (noise), applied before rendering for image runs.
        seed: seeds the transform (and the pages of image runs) per record; 0 renders the run's test pages.
        batch_size: generation batch size (default: the run's `eval_batch_size`).

    Returns:
        Rows `{"id", "prediction", "reference"}`, plus `labels_true` where the dataset stores labels.
    """
    render = page_renderer(run.cfg.data) if run.input_kind == "image" else None
    dataset = ECGReportDataset(split.cache, split.records, transform, seed, render)
    loader = DataLoader(dataset, batch_size=batch_size or run.cfg.data.eval_batch_size, shuffle=False,
                        collate_fn=run.module.collator(run.cfg.data, generate=True))
    rows = [row for batch in loader for row in prediction_rows(batch, run.module.generate_reports(batch))]
    return rows if split.has_labels else without_labels(rows)
