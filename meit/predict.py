"""Load a finished run, generate reports on a dataset split (optionally transformed), score them.

The shared engine of `meit.robustness` and `meit.zeroshot`, on top of the public API of `meit.rundir`
(`load_run`), `meit.datamodule` (`open_dataset`, `PromptCollator`), `meit.data` (splits, signal cache) and
`meit.eval` (`evaluate_records`). Only the requested split is cached, so testing on another dataset never
caches its training split.

A signal transform is called as `transform(signal, rng)` on each float32 (12, T) signal in mV, with a generator
seeded by (seed, record id): the same seed gives the same noisy test set whatever the batch size or order.
For image-branch runs (an encoder whose `input_kind` is "image") the transformed signal is rendered afterwards,
so noise goes on the signal before rendering.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from meit.config import DataConfig, RunConfig
from meit.data.cache import SignalCache
from meit.data.render import ImageTransform, RenderConfig
from meit.data.seeding import record_seed
from meit.data.splits import split_records
from meit.datamodule import PromptCollator, cache_dir, open_dataset
from meit.eval import evaluate_records
from meit.eval.text import MeteorProcess
from meit.rundir import load_run, write_jsonl

SignalTransform = Callable[[np.ndarray, np.random.Generator], np.ndarray]


@dataclass
class LoadedRun:
    """A trained model rebuilt from its run directory.

    Attributes:
        run_dir: the run directory.
        module: the `MEITModule`, in eval mode.
        tokenizer: the backbone's tokenizer.
        cfg: the run's configuration.
    """

    run_dir: Path
    module: Any
    tokenizer: Any
    cfg: RunConfig

    @property
    def input_kind(self) -> str:
        """"signal" or "image": what the run's encoder consumes."""
        own = getattr(self.module, "input_kind", None)  # a module reading images itself (MllamaModule)
        return own or getattr(getattr(self.module.net, "encoder", None), "input_kind", "signal")


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
    """Loads a run directory written by `python -m meit.fit` (see `meit.rundir.load_run`; the two flags are the
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
    cache = SignalCache.build(source, records, cfg.n_samples, cache_dir(cfg) / "signals", split=split,
                              workers=workers, progress=False)
    usable = set(cache.ids)
    kept = [r for r in records if r.record_id in usable][:limit]
    return EvalSplit(dataset_label(cfg), cfg, kept, cache, any(r.labels for r in source.records))


class TransformedSplit(Dataset):
    """Dataset items of an `EvalSplit` with a seeded signal transform and, for image runs, rendering.

    Args:
        split: the records and their cache.
        transform: `transform(signal, rng)`, or None for the clean signal.
        seed: with the record id, seeds each record's generator.
        render: for image runs, `render(signal, seed) -> (3, H, W)` tensor applied after the transform.
    """

    def __init__(self, split: EvalSplit, transform: SignalTransform | None = None, seed: int = 0,
                 render: Callable[[np.ndarray, int], torch.Tensor] | None = None) -> None:
        self.split, self.transform, self.seed, self.render = split, transform, seed, render
        position = {record_id: i for i, record_id in enumerate(split.cache.ids)}
        self.positions = [position[r.record_id] for r in split.records]

    def __len__(self) -> int:
        return len(self.split.records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        record = self.split.records[i]
        signal = self.split.cache[self.positions[i]]
        item_seed = record_seed(self.seed, record.record_id)
        if self.transform is not None:
            signal = np.asarray(self.transform(signal, np.random.default_rng(item_seed)), dtype=np.float32)
        ecg = torch.from_numpy(np.ascontiguousarray(signal, dtype=np.float32))
        if self.render is not None:
            ecg = self.render(signal, item_seed % 2**31)
        return {"id": record.record_id, "ecg": ecg, "report": record.report, "labels": sorted(record.labels)}


def image_renderer(cfg: RunConfig) -> Callable[[np.ndarray, int], torch.Tensor]:
    """Renders a (12, T) signal to the (3, H, W) page tensor an image-branch run consumes.

    Uses `meit.data.render` with the run's render settings where its data config names them
    (`render` / `image_size`), otherwise the standard clean page.
    """

    render_cfg = getattr(cfg.data, "render", None)
    if isinstance(render_cfg, dict):
        render_cfg = RenderConfig(**render_cfg)
    size = getattr(cfg.data, "image_size", None)
    transform = ImageTransform(cfg.data.sampling_rate, render_cfg, tuple(size) if size else None)
    return lambda signal, seed: transform.image(signal, seed)


def generate(run: LoadedRun, split: EvalSplit, transform: SignalTransform | None = None, seed: int = 0,
             batch_size: int | None = None) -> list[dict[str, Any]]:
    """Greedy reports for every record of `split`, as `predictions.jsonl` rows.

    Args:
        run: the loaded run.
        split: records to report on.
        transform: optional seeded signal transform (noise), applied before rendering for image runs.
        seed: seeds the transform per record.
        batch_size: generation batch size (default: the run's `eval_batch_size`).

    Returns:
        Rows `{"id", "prediction", "reference"}`, plus `labels_true` where the dataset stores labels.
    """

    render = image_renderer(run.cfg) if run.input_kind == "image" else None
    dataset = TransformedSplit(split, transform, seed, render)
    collate = PromptCollator(run.tokenizer, run.cfg.data, generate=True)
    loader = DataLoader(dataset, batch_size=batch_size or run.cfg.data.eval_batch_size, shuffle=False,
                        collate_fn=collate)
    device = next(run.module.parameters()).device
    rows: list[dict[str, Any]] = []
    for batch in loader:
        texts = run.module.generate_reports(batch["ecg"].to(device), batch["input_ids"].to(device),
                                            batch["attention_mask"].to(device))
        for record_id, text, reference, labels in zip(batch["ids"], texts, batch["reports"], batch["labels_true"]):
            row = {"id": record_id, "prediction": text, "reference": reference}
            if split.has_labels:
                row["labels_true"] = labels
            rows.append(row)
    return rows


def write_predictions(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Writes rows as predictions.jsonl (one JSON object a line, atomically)."""
    write_jsonl(path, list(rows))


class Scorer:
    """`meit.eval.evaluate_records` with one METEOR process shared by many evaluations (its JVM starts once).

    Args:
        bertscore_model: BERTScore model (None: the offline MiniLM).
        n_bootstrap: bootstrap resamples for the 95 % CIs.
        seed: bootstrap seed.
    """

    def __init__(self, bertscore_model: str | None = None, n_bootstrap: int = 1000, seed: int = 0) -> None:
        self.bertscore_model, self.n_bootstrap, self.seed = bertscore_model, n_bootstrap, seed
        self._meteor: Any = None

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        if self._meteor is None:
            self._meteor = MeteorProcess()
        return evaluate_records(rows, bertscore_model=self.bertscore_model, n_bootstrap=self.n_bootstrap,
                                seed=self.seed, meteor=self._meteor)

    def close(self) -> None:
        """Stops the METEOR process."""
        if self._meteor is not None:
            self._meteor.close()
            self._meteor = None

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
