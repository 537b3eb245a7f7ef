"""The LightningDataModule: a dataset (synthetic, PTB-XL or MIMIC-IV-ECG) -> splits -> signal caches -> batches.

Batches pair each ECG with an instruction prompt and its report, spliced by `meit.fusion.splice.splice`:
right-padded `[prompt][report][EOS]` for training/validation (loss on report + EOS only) and left-padded prompts
for generation. Training samples the instruction among MEIT's and its paraphrases; evaluation always uses the fixed one.
"""

from __future__ import annotations

import os
import random
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from meit.config import DataConfig, default_cache_dir
from meit.data.cache import SignalCache
from meit.data.dataset import ECGReportDataset
from meit.data.source import Source
from meit.data.sources import open_source
from meit.data.splits import split_records
from meit.data.synth import write_dataset
from meit.fusion.splice import splice
from meit.util.atomic import write_text
from meit.util.errors import UserFacingError
from meit.util.locks import build_folder

SYNTHETIC_VERSION = 2
"""Bumped whenever the generator writes other records or reports (v2: the LVH phrases), so a cache never serves
the data of older code."""
DONE_MARKER = ".meit-complete"
PARALLEL_CACHE_MIN = 5000


def cache_dir(cfg: DataConfig) -> Path:
    """The data cache folder (synthetic datasets and signal caches)."""
    return Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()


def synthetic_root(cfg: DataConfig) -> Path:
    """Writes (once) the synthetic dataset of `cfg` in its real on-disk format and returns its root."""
    name = f"{cfg.synthetic_format}-n{cfg.synthetic_n}-seed{cfg.synthetic_seed}-v{SYNTHETIC_VERSION}"

    def build(tmp: Path) -> None:
        write_dataset(tmp, cfg.synthetic_format, cfg.synthetic_n, cfg.synthetic_seed, workers=os.cpu_count())
        write_text(tmp / DONE_MARKER, "")

    return build_folder(cache_dir(cfg) / "synthetic" / name, DONE_MARKER, build)


def cached_split(source: Source, records: list[Any], cfg: DataConfig, split: str, workers: int | None = None,
                 progress: bool = True) -> ECGReportDataset:
    """The one split-and-cache step: a split's records with their signals cached (once) under the data cache.

    Args:
        source: the opened dataset.
        records: the split's records (`meit.data.splits.split_records`).
        cfg: the data config (length, cache folder).
        split: the split's name (names the cache).
        workers: processes filling the cache (default: 1 below `PARALLEL_CACHE_MIN` records, else up to 4).
        progress: show the cache build's progress.
    """
    if workers is None:  # worker processes pay a start-up cost (spawn + imports) that only large splits earn back
        workers = 1 if len(records) < PARALLEL_CACHE_MIN else min(4, os.cpu_count() or 1)
    cache = SignalCache.build(source, records, cfg.n_samples, cache_dir(cfg) / "signals", split=split,
                              workers=workers, progress=progress)
    return ECGReportDataset(cache, records)


def open_dataset(cfg: DataConfig) -> Source:
    """The configured dataset as a `Source` (synthetic data goes through the loader of its format)."""
    if cfg.dataset == "synthetic":
        return open_source(cfg.synthetic_format, synthetic_root(cfg), cfg.sampling_rate)
    if not cfg.root:
        raise ValueError(f"--data.dataset {cfg.dataset} needs --data.root (the dataset folder)")
    return open_source(cfg.dataset, cfg.root, cfg.sampling_rate)


class ResumableSampler(Sampler[tuple[int, int]]):
    """The training shuffle as a pure function of (seed, epoch): yields (record index, prompt seed) pairs, so a
    resumed run can start an epoch at any position and draw the same instructions (`resume_at`).

    Args:
        n: dataset length.
        seed: the run's seed.
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0
        self.resume_at: tuple[int, int] | None = None  # (epoch, samples already trained on in it)

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at every epoch start."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.n, generator=generator).tolist()
        seeds = torch.randint(0, 2**31 - 1, (self.n,), generator=generator).tolist()
        start = 0
        if self.resume_at is not None and self.resume_at[0] == self.epoch:
            start = self.resume_at[1]
        self.resume_at = None
        yield from zip(order[start:], seeds[start:], strict=True)


class _WithPromptSeeds(Dataset):
    """Items of `dataset` addressed by (index, prompt seed) pairs, the seed added to each item."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index, seed = key
        return {**self.dataset[index], "prompt_seed": seed}


class PromptCollator:
    """Turns dataset items into model batches (picklable, so DataLoader workers can use it).

    Args:
        tokenizer: the backbone's tokenizer (pad and EOS tokens set).
        cfg: the data config (`prompt`, `max_report_tokens`).
        train: sample the instruction (if `cfg.prompt.sample_instructions`) instead of using the fixed one.
        generate: build left-padded prompts without reports (generation) instead of training sequences.
    """

    def __init__(self, tokenizer: Any, cfg: DataConfig, train: bool = False, generate: bool = False) -> None:
        self.tokenizer, self.cfg, self.train, self.generate = tokenizer, cfg, train, generate
        self.instructions = cfg.prompt.instructions() if train and cfg.prompt.sample_instructions else None

    def prompt(self, seed: int | None = None) -> str:
        """The prompt text: the template around the fixed or a sampled instruction (drawn with `seed` if given,
        so the choice is a function of the sample, not of a global RNG's state)."""
        instruction = self.cfg.prompt.instruction
        if self.instructions:
            instruction = (random if seed is None else random.Random(seed)).choice(self.instructions)
        return self.cfg.prompt.template.format(instruction=instruction)

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        tok = self.tokenizer
        prompts = [tok(self.prompt(item.get("prompt_seed")), add_special_tokens=True).input_ids for item in items]
        reports = None
        if not self.generate:
            report_ids = tok([item["report"] for item in items], add_special_tokens=False).input_ids
            reports = [ids[: self.cfg.max_report_tokens - 1] for ids in report_ids]
        spliced = splice(prompts, reports, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                         padding_side="left" if self.generate else "right")
        batch = {
            "ecg": torch.stack([item["ecg"] for item in items]),
            "input_ids": spliced.input_ids,
            "attention_mask": spliced.attention_mask,
            "ids": [item["id"] for item in items],
            "reports": [item["report"] for item in items],
            "labels_true": [list(item["labels"]) for item in items],
        }
        if not self.generate:
            batch["labels"] = spliced.labels
        return batch


class MEITDataModule(L.LightningDataModule):
    """Train/val/test ECG-report datasets and their dataloaders.

    `setup()` needs no model (so the embedded backbone can be pre-trained on `train_reports()` first); the
    dataloaders batch with the task's collate functions: call `set_collator(task.collator)` in between.

    Args:
        cfg: the data config.
    """

    def __init__(self, cfg: DataConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or DataConfig()
        self.make_collator: Callable[..., Callable] | None = None
        self.source: Source | None = None
        self.datasets: dict[str, ECGReportDataset] = {}
        self.train_sampler: ResumableSampler | None = None
        self._resume_at: tuple[int, int] | None = None
        self.notes: list[str] = []  # what the run summary must say about the data (e.g. no validation split)

    def prepare_data(self) -> None:
        """Writes the synthetic dataset once (a no-op for real datasets and when cached)."""
        if self.cfg.dataset == "synthetic":
            synthetic_root(self.cfg)

    def setup(self, stage: str | None = None) -> None:
        """Opens the dataset, splits it (`--data.split`) and builds (once) the signal cache of each split.

        An empty validation split (e.g. a PTB-XL subset without a fold-9 record) is left out with a warning: the run
        trains without validation and its summary says so. An empty train or test split is an error.
        """
        if self.datasets:
            return
        self.source = open_dataset(self.cfg)
        splits = split_records(self.source, seed=self.cfg.split_seed, method=self.cfg.split)
        for name, records in splits.items():
            dataset = cached_split(self.source, records, self.cfg, name) if records else None
            if dataset is not None and len(dataset):
                self.datasets[name] = dataset
            elif name == "val":
                self._no_validation(len(records))
            else:
                problem = f"the {name} split of {self.source.root} is empty"
                if records:
                    problem += f" (none of its {len(records)} records has a usable signal)"
                raise UserFacingError(f"--data.split {self.cfg.split}", problem + self._split_hint())

    def _split_hint(self) -> str:
        if self.cfg.split == "folds" and any(r.fold is not None for r in self.source.records):
            return " (PTB-XL folds: 1-8 train, 9 val, 10 test); `--data.split patient` splits by patient instead"
        return ""

    def _no_validation(self, n_records: int) -> None:
        reason = f"none of its {n_records} records has a usable signal" if n_records else "no record falls in it"
        note = (f"the val split of {self.source.root} is empty ({reason}; --data.split {self.cfg.split}"
                f"{self._split_hint()}): training without validation")
        self.notes.append(note)
        warnings.warn(note, stacklevel=2)

    def train_reports(self) -> list[str]:
        """The training split's reports (the embedded backbone's pre-training corpus)."""
        self.setup()
        return [r.report for r in self.datasets["train"].records]

    def instructions(self) -> list[str]:
        """Every prompt the model may see (the embedded tokenizer learns to encode them compactly)."""
        return self.cfg.prompt.texts()

    def set_collator(self, make_collator: Callable[..., Callable]) -> None:
        """`make_collator(data_cfg, train=, generate=)` -> a collate function: the task's `collator` hook."""
        self.make_collator = make_collator

    def collator(self, train: bool = False, generate: bool = False) -> Callable:
        """A collate function of the task over this module's data config."""
        if self.make_collator is None:
            raise RuntimeError("MEITDataModule.set_collator() must be called before building dataloaders")
        return self.make_collator(self.cfg, train=train, generate=generate)

    def _loader(self, split: str, batch_size: int, shuffle: bool, collate: Callable,
                sampler: Sampler | None = None) -> DataLoader:
        self.setup()
        dataset = self.datasets[split]
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                          collate_fn=collate, num_workers=self.cfg.num_workers,
                          drop_last=shuffle and len(dataset) > batch_size,
                          persistent_workers=self.cfg.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        """Shuffled by a `ResumableSampler` (its position and instruction draws survive a resume); the loader's own
        worker seed comes from a seeded generator, not from the global torch RNG."""
        self.setup()
        dataset = self.datasets["train"]
        seed = int(os.environ.get("PL_GLOBAL_SEED", "0"))  # the run's --seed_everything
        if self.train_sampler is None:
            self.train_sampler = ResumableSampler(len(dataset), seed)
            self.train_sampler.resume_at = self._resume_at
        return DataLoader(_WithPromptSeeds(dataset), batch_size=self.cfg.batch_size, sampler=self.train_sampler,
                          collate_fn=self.collator(train=True), num_workers=self.cfg.num_workers,
                          drop_last=len(dataset) > self.cfg.batch_size, persistent_workers=self.cfg.num_workers > 0,
                          generator=torch.Generator().manual_seed(seed))

    def resume_training_at(self, epoch: int, samples: int) -> None:
        """Starts training epoch `epoch` after its first `samples` samples (a mid-epoch resume)."""
        self._resume_at = (epoch, samples)
        if self.train_sampler is not None:
            self.train_sampler.resume_at = self._resume_at

    def val_dataloader(self) -> DataLoader | list:
        """The validation batches; no loader (an empty list) when the validation split is empty."""
        self.setup()
        if "val" not in self.datasets:
            return []
        return self._loader("val", self.cfg.eval_batch_size, False, self.collator())

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.cfg.eval_batch_size, False, self.collator())

    def predict_dataloader(self, split: str = "test", limit: int | None = None) -> DataLoader:
        """Left-padded prompts of `split` (its first `limit` records, if given) for generation, in dataset order."""
        self.setup()
        dataset = self.datasets[split]
        if limit is not None:
            dataset = Subset(dataset, range(min(limit, len(dataset))))
        return DataLoader(dataset, batch_size=self.cfg.eval_batch_size, shuffle=False,
                          collate_fn=self.collator(generate=True), num_workers=self.cfg.num_workers)
