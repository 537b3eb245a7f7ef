"""`python -m meit.fit`: train an ECG-to-report model, then test it, into one run directory.

A LightningCLI (jsonargparse) without subcommands: every config field is a flag (`--model.lora.r 16`,
`--data.dataset ptbxl --data.root DIR`, `--trainer.max_epochs 3`, ...), `--config configs/X.yaml` loads a preset,
`--print_config` prints the resolved configuration. The run directory (`--run_dir`, default `runs/<date-time>/`)
is printed on the last line of the output. `--seeds 0 1 2` runs one seed per run directory RUN_DIR/seed_N and writes
RUN_DIR/metrics.json and report.md with each seed's metrics and their mean ± sd.

Steps: data (synthetic data is written once to the cache) -> backbone (the embedded default is pre-trained once on
the training reports, then cached) -> LoRA + encoder + fusion training -> trainable weights -> greedy generation on
the test split -> predictions.jsonl, metrics.json, report.md.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import set_parsing_settings
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import CheckpointIO

from meit.config import CONFIG_GROUPS, RunConfig, add_config_groups
from meit.config_checks import check_no_legacy_args, check_run_config
from meit.data.mimic import machine_measurements_for
from meit.eval import HEADLINE_METRICS
from meit.llm.backbone import resolve_backbone
from meit.probe import probe_run
from meit.report_html import write_report_safely
from meit.runs.rundir import (
    CONFIG,
    METRICS,
    RUN_DIR_ENV,
    RUN_INFO,
    AtomicCheckpointIO,
    attach_grounding,
    check_same_settings,
    is_finished,
    new_run_dir,
    read_run_json,
    save_run,
    write_test_outputs,
)
from meit.runs.seeds import run_seeds, split_seed_args
from meit.tasks.align import prepare_recipe
from meit.tasks.factory import build_task, make_datamodule, make_task, needs_text_backbone
from meit.tasks.progress import LineProgress
from meit.tasks.resume import ExactResume
from meit.util.atomic import write_json, write_text
from meit.util.errors import UserFacingError
from meit.util.locks import remove_stale_pid_temps

set_parsing_settings(docstring_parse_attribute_docstrings=True)

TRAINER_DEFAULTS: dict[str, Any] = {
    "max_epochs": 8,
    "accelerator": "auto",
    "devices": 1,
    "log_every_n_steps": 10,
    "num_sanity_val_steps": 0,
    "gradient_clip_val": 1.0,
}
"""The embedded CPU default's Trainer flags (each one is overridable, e.g. `--trainer.max_epochs 16`)."""

CHECKPOINT_EVERY_N_STEPS = 50


class _DropLightningTips(logging.Filter):
    """Drops Lightning's "Tip: try installing litlogger/litmodels" lines (services the project does not use)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in record.getMessage()


def quiet_lightning() -> None:
    """Silences the output a run does not act on: Lightning's advertising tips, torch 2.13's FutureWarning about
    `LeafSpec` raised inside Lightning's own `_pytree` helper (not a call of this project's), and Lightning's
    zero-length warning for the absent val loader of an empty validation split (`MEITDataModule` warns itself), and
    its caution about `args` beside `sys.argv` (each seed of `--seeds` gets its own argument list)."""
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropLightningTips) for f in rank_zero.filters):
        rank_zero.addFilter(_DropLightningTips())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
    # An empty validation split gives no val loader (an empty list): the data module has warned and the summary says so.
    warnings.filterwarnings("ignore", message=r"Total length of `list` across ranks is zero")
    # `--seeds` (and the experiment drivers) hand each run its own argument list while sys.argv holds the outer
    # command line: that is the intended use of LightningCLI's `args`, not a mistake.
    warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter is intended to run from within Python")


class MEITCLI(LightningCLI):
    """LightningCLI whose `--model.*`, `--data.*`, `--optim.*`, `--test.*` groups are MEIT's config dataclasses."""

    def __init__(self, args: list[str] | None = None) -> None:
        quiet_lightning()
        super().__init__(
            model_class=None,
            datamodule_class=None,
            save_config_callback=None,
            trainer_defaults=TRAINER_DEFAULTS,
            seed_everything_default=0,
            parser_kwargs={"description": __doc__.split("\n\n")[0], "prog": "python -m meit.fit"},
            args=args,
            run=False,
            auto_configure_optimizers=False,
            load_from_checkpoint_support=False,
        )

    def add_core_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(self.trainer_class, "trainer")
        parser.set_defaults({f"trainer.{k}": v for k, v in self.trainer_defaults.items()})
        add_config_groups(parser)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--run_dir", type=str | None, default=None,
                            help="Run directory (default: runs/<date-time>/); printed on the last output line.")
        parser.add_argument("--ckpt_path", type=str | None, default=None,
                            help="Resume training from this checkpoint (e.g. RUN_DIR/checkpoints/last.ckpt).")

    def instantiate_classes(self) -> None:
        self.config_init = self.parser.instantiate(self.config)
        init = self.config_init
        self.run_config, notes = check_run_config(RunConfig(**{k: init[k] for k in CONFIG_GROUPS}))
        for note in notes:
            print(f"[meit] {note}", flush=True)
        # The saved config.yaml is the config that ran (an encoder filled in for --model.branch image, the
        # recipe's label-loss weight included).
        self.config["model.encoder"] = self.run_config.model.encoder
        self.config["model.encoder_kwargs"] = self.run_config.model.encoder_kwargs
        self.config["model.aux_label_loss_weight"] = self.run_config.model.aux_label_loss_weight
        self.run_dir = choose_run_dir(init.run_dir)
        self.config["run_dir"] = str(self.run_dir)
        self.model = make_task(self.run_config)
        self.datamodule = make_datamodule(self.run_config)
        self.trainer = self.instantiate_trainer(**self._trainer_overrides(dict(init.trainer)))

    def _trainer_overrides(self, trainer: dict[str, Any]) -> dict[str, Any]:
        """Run-dir logging, atomic checkpoints every N steps, progress lines when stdout is not a terminal, and the
        precision policy (fp32 on CPU)."""
        callbacks = list(trainer.get("callbacks") or [])
        if not any(isinstance(c, ModelCheckpoint) for c in callbacks):
            callbacks.append(ModelCheckpoint(dirpath=self.run_dir / "checkpoints", save_last=True, save_top_k=0,
                                             every_n_train_steps=CHECKPOINT_EVERY_N_STEPS))
        if not any(isinstance(c, ExactResume) for c in callbacks):
            callbacks.append(ExactResume())
        if (trainer.get("enable_progress_bar") is not False and not sys.stdout.isatty()
                and not any(isinstance(c, ProgressBar) for c in callbacks)):
            callbacks.append(LineProgress())  # rich's live bar prints nothing into a log file
        plugins = trainer.get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, list) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            plugins.append(AtomicCheckpointIO())
        root = trainer.get("default_root_dir") or str(self.run_dir)
        logger = trainer.get("logger")
        return {
            "default_root_dir": root,
            # Lightning's default logger, named here so that it does not print why TensorBoard is not used.
            "logger": CSVLogger(root) if logger is None or logger is True else logger,
            "callbacks": callbacks,
            "plugins": plugins,
            "precision": resolve_precision(trainer.get("precision"), trainer.get("accelerator")),
        }

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        config["callbacks"] = list(config.get("callbacks") or []) + callbacks
        return self.trainer_class(**config)


ENV_RANKS = ("RANK", "NODE_RANK", "LOCAL_RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK")
"""Environment variables in which launchers (Lightning, torchrun, SLURM, MPI) give a process its rank."""


def env_is_rank_zero() -> bool:
    """Whether the environment makes this process global rank 0 (or a single process)."""
    return all(os.environ.get(name, "0").strip() in ("", "0") for name in ENV_RANKS)


def choose_run_dir(run_dir: str | None) -> Path:
    """The run directory of this process: `--run_dir` as given, else a new unique `runs/<date-time>[_N]`.

    The automatic name is chosen once, by rank 0 (`meit.runs.rundir.new_run_dir`, created exclusively), and passed to
    the DDP ranks Lightning spawns through `MEIT_RUN_DIR` (`PID:DIR`, read only by the children of that PID, so
    a later run of the same shell or test process never reuses it). Ranks started by an outside launcher
    (torchrun, srun) create nothing here; `fit` takes rank 0's directory by a broadcast once the process group is
    up (pass `--run_dir` to such jobs to have it from the start).
    """
    if run_dir:
        return Path(run_dir)
    pid, _, inherited = os.environ.get(RUN_DIR_ENV, "").partition(":")
    if inherited and pid == str(os.getppid()):
        return Path(inherited)
    if not env_is_rank_zero():
        return Path("runs") / f"rank-{os.getpid()}-pending"  # replaced by rank 0's directory in `fit`
    chosen = new_run_dir()
    os.environ[RUN_DIR_ENV] = f"{os.getpid()}:{chosen}"
    return chosen


def uses_cuda(accelerator: Any) -> bool:
    """Whether the Trainer will run on a CUDA GPU."""
    name = str(accelerator or "auto").lower()
    return torch.cuda.is_available() and name in ("auto", "gpu", "cuda")


def resolve_precision(precision: Any, accelerator: Any) -> Any:
    """bf16-mixed on a GPU by default; always fp32 on a CPU (bf16 matmuls are ~100x slower there)."""
    if uses_cuda(accelerator):
        return precision or "bf16-mixed"
    if precision is not None and str(precision) not in ("32", "32-true"):
        warnings.warn(f"precision {precision} asked for on a CPU: training in fp32 instead (32-true)", stacklevel=2)
    return "32-true"


def fit(cli: MEITCLI) -> Path:
    """Runs the whole job of a parsed CLI; returns the run directory."""
    cfg, run_dir, trainer, dm, module = cli.run_config, cli.run_dir, cli.trainer, cli.datamodule, cli.model
    if trainer.is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text(run_dir / "config.yaml", cli.parser.dump(cli.config))
    timings: dict[str, float] = {}
    start = time.perf_counter()
    dm.prepare_data()
    dm.setup("fit")
    timings["data_s"] = time.perf_counter() - start
    tick = time.perf_counter()
    reference = None
    if needs_text_backbone(cfg.model):  # a real Mllama brings its own language model
        # Pre-training a backbone that is not cached yet draws random numbers; the run's own must not depend on it.
        with torch.random.fork_rng(devices=[]):
            reference = resolve_backbone(cfg.model, cfg.data.cache_dir, dm.train_reports(), dm.instructions())
    build_task(module, cfg, reference, trainer.strategy.root_device.type)
    dm.set_collator(module.collator)
    timings["backbone_s"] = time.perf_counter() - tick
    tick = time.perf_counter()
    stage1 = prepare_recipe(module, dm, cfg, run_dir, resume=cli.config_init.ckpt_path is not None,
                            seed=int(os.environ.get("PL_GLOBAL_SEED", "0")), device=trainer.strategy.root_device)
    if stage1 is not None:
        timings["stage1_s"] = time.perf_counter() - tick
        tick = time.perf_counter()
    if trainer.is_global_zero:  # checkpoint writes a killed run left half-done (never a live writer's)
        remove_stale_pid_temps(run_dir / "checkpoints")
    trainer.fit(module, datamodule=dm, ckpt_path=cli.config_init.ckpt_path, weights_only=True)
    timings["train_s"] = time.perf_counter() - tick
    run_dir = Path(trainer.strategy.broadcast(str(run_dir)))  # ranks an outside launcher started take rank 0's
    if trainer.is_global_zero:
        save_run(run_dir, module)
    info = {"trainable_parameters": module.count_trainable(), "train_steps": trainer.global_step,
            "n_records": {name: len(ds) for name, ds in dm.datasets.items()}, "backbone": module.backbone_reference}
    if stage1 is not None:
        info["stage1"] = stage1
    if dm.notes:  # e.g. trained without validation (an empty val split)
        info["notes"] = list(dm.notes)
    if not cfg.test.skip:
        tick = time.perf_counter()
        batches = trainer.predict(module, dataloaders=dm.predict_dataloader("test", cfg.test.limit))
        timings["test_s"] = time.perf_counter() - tick
        rows = gather_rows([row for batch in batches for row in batch])
        if trainer.is_global_zero:
            machine = machine_measurements_for(dm.source, [row["id"] for row in rows])
            rows = attach_grounding(rows, dm.datasets["test"], cfg.data.sampling_rate, machine)
            info["metrics"] = write_test_outputs(run_dir, rows, cfg, info)
    if not cfg.test.skip and cfg.model.branch == "signal" and trainer.is_global_zero:
        tick = time.perf_counter()
        # This invocation resolved the backbone itself: reloading it is what the command line asked for.
        info["metrics"].update(probe_run(run_dir, device=str(trainer.strategy.root_device),
                                         trust_remote_code=cfg.model.backbone.trust_remote_code,
                                         allow_unverified_backbone=True))
        timings["probe_s"] = time.perf_counter() - tick
    timings["total_s"] = time.perf_counter() - start
    info["timings"] = {k: round(v, 1) for k, v in timings.items()}
    if trainer.is_global_zero:
        write_json(run_dir / RUN_INFO, info)
        write_report_safely(run_dir)
    trainer.strategy.barrier("meit-run-written")  # no rank leaves (and none reads the run) before rank 0 wrote it
    return run_dir


def continue_run(cli: MEITCLI) -> bool:
    """Whether the CLI's run directory already holds the finished run of this config (True: nothing to do). A run
    of this config that was killed gets `--ckpt_path RUN_DIR/checkpoints/last.ckpt` (an exact resume); a run of
    another config is refused, naming the option that differs.

    Raises:
        meit.util.errors.UserFacingError: the run directory holds a run of other settings.
    """
    run_dir = cli.run_dir
    if not (run_dir / CONFIG).is_file():
        return False
    current = yaml.safe_load(cli.parser.dump(cli.config))
    for key in ("run_dir", "ckpt_path"):
        current.pop(key, None)
    check_same_settings(run_dir, current, asker="this command line")
    if is_finished(run_dir) and (run_dir / METRICS).is_file():
        print(f"[meit] {run_dir} holds the finished run of this config: reusing it", flush=True)
        return True
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.is_file() and cli.config_init.ckpt_path is None:
        print(f"[meit] {run_dir} holds a killed run of this config: resuming from {last}", flush=True)
        cli.config_init.ckpt_path = str(last)
    return False


def gather_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every rank's prediction rows, on every rank (one copy per id: DistributedSampler pads shards by repeating
    records). Under DDP each rank generates for its shard of the test split only."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return rows
    shards: list[list[dict[str, Any]] | None] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(shards, rows)
    unique = {row["id"]: row for shard in shards for row in shard}
    return sorted(unique.values(), key=lambda row: row["id"])


def summary(run_dir: Path) -> str:
    """A few lines on what the run produced (the run directory itself is printed after them)."""
    info = read_run_json(run_dir / RUN_INFO)
    lines = [f"trained {info['train_steps']} steps in {info['timings']['train_s']} s "
             f"({info['trainable_parameters']:,} trainable parameters), total {info['timings']['total_s']} s"]
    lines += [f"note: {note}" for note in info.get("notes", [])]
    metrics = info.get("metrics") or {}
    keys = (*HEADLINE_METRICS, "probe_label_macro_f1")
    if metrics:
        lines.append("test: " + ", ".join(f"{k} {metrics[k]:.3f}" for k in keys if isinstance(metrics.get(k), float)))
    return "\n".join(lines)


def main(args: list[str] | None = None) -> Path:
    """`python -m meit.fit [flags]`; prints the run directory last. With `--seeds N [N ...]` one run per seed
    (PARENT/seed_N, PARENT = `--run_dir`), then PARENT/metrics.json and report.md with mean ± sd; prints PARENT."""
    seeds, parent, rest = split_seed_args(sys.argv[1:] if args is None else list(args))
    try:
        if seeds is not None:
            parent = run_seeds(seeds, parent, rest, lambda seed_args: run_one(seed_args, continue_runs=True))
            print(os.fspath(parent), flush=True)
            return parent
        return run_one(rest)
    except UserFacingError as error:  # a file or setting the user gave: its name and the problem, no traceback
        print(f"error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def run_one(args: list[str], continue_runs: bool = False) -> Path:
    """One run of a `meit.fit` command line (without `--seeds`); prints its summary and run directory (rank 0 only
    under DDP; every rank exits 0). With `continue_runs` (each seed of `--seeds`) a finished run of the same config
    in the run directory is reused and a killed one resumes from its last checkpoint (`continue_run`)."""
    try:
        check_no_legacy_args(args)
        cli = MEITCLI(args)
        run_dir = cli.run_dir if continue_runs and continue_run(cli) else fit(cli)
    finally:  # the name is for this run's spawned ranks only
        if os.environ.get(RUN_DIR_ENV, "").startswith(f"{os.getpid()}:"):
            del os.environ[RUN_DIR_ENV]
    if cli.trainer.is_global_zero:  # under DDP, rank 0 alone wrote the run and reports it
        sys.stdout.flush()
        print(summary(run_dir), flush=True)
        print(os.fspath(run_dir), flush=True)
    return run_dir


if __name__ == "__main__":
    main()
