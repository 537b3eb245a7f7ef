"""A run directory: what `python -m meit.fit` writes, and how a saved run is loaded back.

Layout:
    config.yaml           the resolved configuration (every flag)
    weights.safetensors   the trainable weights only: encoder, projector, LoRA adapters (+ their BatchNorm statistics)
    backbone.json         the frozen backbone: name, the folder or hub id `from_pretrained` loads, content hash
    predictions.jsonl     {"id", "prediction", "reference", "labels_true"} per test record
    metrics.json          corpus-level text metrics, label scores and 95 % CIs (meit.eval)
    report.md             the metrics as tables, with example reports
    report.html           one self-contained page of the results (meit.report_html), written last
    run.json              sizes, step count and timings
    checkpoints/          Lightning checkpoints (trainable state + optimiser), written atomically
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning.pytorch.plugins.io import TorchCheckpointIO
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from meit.config import RunConfig, run_config_from_dict, upgrade_saved_config
from meit.data.dataset import ECGReportDataset
from meit.data.measure import measure_ecg, with_machine_measurements
from meit.eval import METRIC_KEYS, evaluate_records
from meit.eval.grounding import check_report
from meit.llm.backbone import check_remote_code, verify_saved_reference
from meit.tasks.factory import build_task, make_task, needs_text_backbone
from meit.util.atomic import atomic_file, write_bytes, write_json, write_text
from meit.util.errors import RunFileError, UntrustedCodeError, UserFacingError

WEIGHTS = "weights.safetensors"
BACKBONE = "backbone.json"
CONFIG = "config.yaml"
PREDICTIONS = "predictions.jsonl"
METRICS = "metrics.json"
REPORT = "report.md"
RUN_INFO = "run.json"
FINISHED_RUN_FILES = (WEIGHTS, BACKBONE, RUN_INFO)
"""What a finished `meit.fit` run directory holds (run.json is written last)."""
RUNS_ROOT = Path("runs")
RUN_DIR_ENV = "MEIT_RUN_DIR"
"""`PID:RUN_DIR` of the process that chose an automatic run directory; the DDP ranks it spawns read it."""



class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file in the same folder, fsynced, then renamed (never half-written);
    read back with `torch.load(weights_only=True)` only."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        with atomic_file(path, "wb") as f:
            torch.save(checkpoint, f)

    def load_checkpoint(self, path: str | Path, map_location: Any = None, weights_only: bool | None = None) -> dict:
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)


def new_run_dir(root: str | Path = RUNS_ROOT, now: dt.datetime | None = None, prefix: str = "") -> Path:
    """Creates a fresh run directory `root/<prefix><date-time>` exclusively (`_2`, `_3`, ... when that name is
    taken).

    Two runs started in the same second get two directories: `os.mkdir` fails for the second one, which moves on
    to the next suffix.

    Args:
        root: the parent folder (created if missing).
        now: the time naming the directory (default: now).
        prefix: put before the date (e.g. `compare-`).

    Returns:
        The new, empty directory.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    stamp = prefix + (now or dt.datetime.now()).strftime("%Y-%m-%d_%H-%M-%S")
    for k in itertools.count(1):
        candidate = root / (stamp if k == 1 else f"{stamp}_{k}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise AssertionError("unreachable")


def save_run(run_dir: Path, module: Any) -> None:
    """Writes the trainable weights (safetensors), the task's extras and the backbone reference of a built task."""
    state = {k: v.detach().cpu().contiguous() for k, v in module.trainable_state_dict().items()}
    write_bytes(run_dir / WEIGHTS, save_safetensors(state, metadata={"format": "meit-trainable-v1"}))
    module.save_extras(run_dir)  # e.g. the Mllama LoRA adapter in peft's layout
    write_json(run_dir / BACKBONE, module.backbone_reference)


def is_finished(run_dir: Path) -> bool:
    """Whether `run_dir` holds a finished `meit.fit` run."""
    return all((run_dir / name).is_file() for name in FINISHED_RUN_FILES)


def check_same_settings(run_dir: Path, wanted: dict[str, Any], asker: str = "the experiment") -> None:
    """Every option `wanted` sets (at any depth) must be what the run saved in its config.yaml (`asker`: who wants
    them, for the message).

    Raises:
        meit.util.errors.UserFacingError: naming the run directory and the first option that differs.
    """
    saved = yaml.safe_load((run_dir / CONFIG).read_text()) if (run_dir / CONFIG).is_file() else {}
    _compare_options(run_dir, upgrade_saved_config(saved or {}), wanted, "", asker)


def _compare_options(run_dir: Path, saved: Any, wanted: Any, name: str, asker: str) -> None:
    # Option groups are compared key by key (the saved config holds every default too); a `*_kwargs` mapping is
    # one option, passed whole to a constructor.
    if isinstance(wanted, dict) and wanted and isinstance(saved, dict) and not name.endswith("_kwargs"):
        for key, value in wanted.items():
            _compare_options(run_dir, saved.get(key), value, f"{name}.{key}" if name else key, asker)
    elif _normal(saved) != _normal(wanted):
        raise UserFacingError(run_dir, f"holds a run with {name}: {saved!r}, but {asker} asks for {wanted!r}; give "
                                       f"another run directory or remove this one")


def _normal(value: Any) -> Any:
    """A value as YAML reads it back (tuples become lists, numbers in strings stay strings)."""
    return yaml.safe_load(yaml.safe_dump(value))


def read_run_bytes(path: str | Path) -> bytes:
    """The bytes of a run file.

    Raises:
        FileNotFoundError: the file is missing.
        RunFileError: it is empty (a write interrupted by a kill or a full disk before writes were atomic).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {path.parent} a finished `meit.fit` run directory?")
    data = path.read_bytes()
    if not data:
        raise RunFileError(path, "empty (0 bytes): it was cut off while being written; re-create the run")
    return data


def read_run_text(path: str | Path) -> str:
    """The UTF-8 text of a run file (see `read_run_bytes`; RunFileError if it is not UTF-8)."""
    data = read_run_bytes(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RunFileError(path, f"not UTF-8 text (byte {e.start}): the file is corrupt") from None


def read_run_json(path: str | Path) -> Any:
    """A run's JSON file (metrics.json, run.json, backbone.json), parsed.

    Raises:
        FileNotFoundError: the file is missing.
        RunFileError: it is empty, not UTF-8 or not valid JSON (with the line and column).
    """
    text = read_run_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise RunFileError(path, f"not valid JSON at line {e.lineno} column {e.colno} ({e.msg})") from None


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A run's weights.safetensors as tensors (RunFileError when it is empty, truncated or not safetensors)."""
    data = read_run_bytes(path)
    try:
        return load_safetensors(data)
    except (SafetensorError, ValueError, OSError) as e:
        raise RunFileError(path, f"not a safetensors file, or a truncated one ({e})") from None


def read_config(run_dir: str | Path, trust_remote_code: bool = False) -> RunConfig:
    """The `RunConfig` saved in a run directory's config.yaml, `model.backbone.trust_remote_code` set by the caller.

    A run directory is data, not instructions: whether remote code may run is the current command line's choice
    (`--trust_remote_code`), never the saved file's.

    Args:
        run_dir: the run directory.
        trust_remote_code: whether the current invocation allows remote code.

    Raises:
        FileNotFoundError: config.yaml is missing.
        RunFileError: config.yaml is empty, not YAML, or not a `meit.fit` configuration.
        UntrustedCodeError: the saved run needs remote code (`model.backbone.trust_remote_code: true`) and the
            caller does not allow it.
    """
    path = Path(run_dir) / CONFIG
    try:
        values = yaml.safe_load(read_run_text(path))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise RunFileError(path, f"not valid YAML{where} ({getattr(e, 'problem', None) or e})") from None
    if not isinstance(values, dict):
        raise RunFileError(path, f"not a `meit.fit` configuration (a {type(values).__name__}, not a mapping)")
    try:
        cfg = run_config_from_dict(values)
    except Exception as e:  # jsonargparse reports unknown keys and wrong types with several exception types
        raise RunFileError(path, f"not a `meit.fit` configuration ({e})") from None
    if cfg.model.backbone.trust_remote_code and not trust_remote_code:
        raise UntrustedCodeError(path, "sets `model.backbone.trust_remote_code: true`: loading this run would run "
                                 f"code from its backbone folder or hub id ({cfg.model.llm}). A saved setting never "
                                 "allows that; pass --trust_remote_code if you trust this run directory and its "
                                 "backbone")
    cfg.model.backbone.trust_remote_code = trust_remote_code
    return cfg


def add_load_flags(parser: argparse.ArgumentParser) -> None:
    """Adds `--trust_remote_code` and `--allow_unverified_backbone` to a command that loads a saved run."""
    parser.add_argument("--trust_remote_code", action="store_true",
                        help="allow the run's backbone to run its own Python code (auto_map); only for runs and "
                        "backbones you trust (a run's config.yaml never allows it)")
    parser.add_argument("--allow_unverified_backbone", action="store_true",
                        help="load a backbone that backbone.json cannot verify (no or another hash, or a hub id, "
                        "which is then downloaded), with a warning")


def load_flags(args: argparse.Namespace) -> dict[str, bool]:
    """The `load_run` keyword arguments of the flags `add_load_flags` added."""
    return {"trust_remote_code": args.trust_remote_code, "allow_unverified_backbone": args.allow_unverified_backbone}


def load_run(run_dir: str | Path, device: str = "cpu", trust_remote_code: bool = False,
             allow_unverified_backbone: bool = False) -> tuple[Any, Any, RunConfig]:
    """Rebuilds a trained model from a run directory: config.yaml + backbone.json + weights.safetensors.

    Nothing is fetched from the network and no code of the backbone runs unless the caller allows it: the saved
    `trust_remote_code` is ignored, backbone.json must name a local folder holding the backbone of its hash.

    Args:
        run_dir: a directory written by `python -m meit.fit`.
        device: where to put the model ("cpu" or "cuda").
        trust_remote_code: the current command line's `--trust_remote_code`.
        allow_unverified_backbone: the current command line's `--allow_unverified_backbone` (a warning instead of
            a refusal for a backbone without or with another hash, or a hub id).

    Returns:
        (the `ReportTask` in eval mode, its tokenizer, the run's config).

    Raises:
        FileNotFoundError: a file of the run is missing.
        RunFileError: a run file is empty or corrupt, or backbone.json cannot be verified.
        UntrustedCodeError: the run or its backbone needs remote code the caller did not allow.
    """

    run_dir = Path(run_dir)
    for name in (CONFIG, BACKBONE, WEIGHTS):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{run_dir / name} not found: is {run_dir} a finished `meit.fit` run directory?")
    cfg = read_config(run_dir, trust_remote_code)
    reference, local_only = None, True
    if needs_text_backbone(cfg.model):  # a real Mllama brings its own language model
        reference = read_run_json(run_dir / BACKBONE)
        local_only = verify_saved_reference(reference, run_dir / BACKBONE, allow_unverified_backbone)
    else:  # the saved config names the Mllama: a folder, checked like a backbone folder
        model = cfg.model.vision_llm.model
        if not Path(model).is_dir() and not allow_unverified_backbone:
            raise RunFileError(run_dir / CONFIG, f"model.vision_llm.model {model!r} is not a local folder (a hub id?): "
                               "loading it would fetch a model from the network that nothing verifies. Pass "
                               "--allow_unverified_backbone to load it anyway")
        check_remote_code(model, trust_remote_code, local_files_only=not allow_unverified_backbone)
    weights = read_weights(run_dir / WEIGHTS)
    module = build_task(make_task(cfg), cfg, reference, torch.device(device).type, local_files_only=local_only)
    try:
        module.load_trainable_state_dict(weights)
    except KeyError as e:
        raise RunFileError(run_dir / WEIGHTS, f"does not hold this run's weights ({e.args[0]})") from None
    return module.to(device).eval(), module.tokenizer, cfg


def attach_grounding(rows: list[dict[str, Any]], dataset: ECGReportDataset | Any, fs: float,
                     machine: dict[str, dict[str, str]] | None = None) -> list[dict[str, Any]]:
    """Rows with ``measurements`` of their input ECG (`measure_ecg`) and ``grounding`` of their prediction.

    Args:
        rows: prediction rows (``id``, ``prediction``, ...).
        dataset: the split the rows were predicted on (its cached signals are measured).
        fs: the signals' sampling rate.
        machine: record id -> the dataset's own machine measurements (MIMIC-IV-ECG's machine_measurements.csv,
            `meit.data.mimic.machine_measurements_for`), used for rate, PR, QRS and axis where present.

    Returns:
        The rows with ``measurements`` and ``grounding``; rows whose id is not in `dataset` unchanged.
    """
    machine = machine or {}
    index = {record.record_id: i for i, record in enumerate(dataset.records)}
    out = []
    for row in rows:
        i = index.get(row["id"])
        if i is None:
            out.append(row)
            continue
        measured = with_machine_measurements(measure_ecg(dataset.raw_signal(i), fs), machine.get(row["id"]))
        out.append({**row, "measurements": measured, "grounding": check_report(row["prediction"], measured)})
    return out


def write_test_outputs(run_dir: Path, rows: list[dict[str, Any]], cfg: RunConfig, info: dict[str, Any]) -> dict:
    """Writes predictions.jsonl, metrics.json and report.md; returns the metrics.

    Where no record of the split has labels (MIMIC-IV-ECG stores none) `labels_true` is left out, so the clinical
    scores compare with labels extracted from the reference reports instead of with empty label sets.
    """
    if not any(row.get("labels_true") for row in rows):
        rows = without_labels(rows)
    write_jsonl(run_dir / PREDICTIONS, rows)

    metrics = evaluate_records(rows, bertscore_model=cfg.test.bertscore_model, n_bootstrap=cfg.test.n_bootstrap,
                               seed=0, metrics=cfg.test.metrics)
    write_json(run_dir / METRICS, metrics)
    write_text(run_dir / REPORT, report_markdown(metrics, rows, cfg, info))
    return metrics


def without_labels(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Prediction rows without `labels_true`, for a dataset that stores no labels (MIMIC-IV-ECG): the clinical
    scores then compare with labels extracted from the reference reports instead of with empty label sets."""
    return [{k: v for k, v in row.items() if k != "labels_true"} for row in rows]


def write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Writes one JSON object per line to `path`, atomically (predictions.jsonl and its variants)."""
    with atomic_file(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def report_markdown(metrics: dict[str, Any], rows: list[dict[str, Any]], cfg: RunConfig, info: dict[str, Any],
                    n_examples: int = 5) -> str:
    """The run's metrics (with 95 % CIs) and a few generated reports, as Markdown tables."""
    ci = metrics.get("ci95") or {}
    lines = ["# MEIT run", "",
             f"Backbone `{cfg.model.llm}`, fusion `{cfg.model.fusion}`, encoder `{cfg.model.encoder}`, "
             f"ECG input `{cfg.model.ecg_input}`; dataset `{cfg.data.dataset}` at {cfg.data.sampling_rate} Hz; "
             f"{info.get('trainable_parameters', 0):,} trainable parameters, {info.get('train_steps', 0)} steps.", "",
             f"## Test metrics (n = {metrics.get('n', len(rows))}, BERTScore model "
             f"`{metrics.get('bertscore_model', '-')}`)", "", "| metric | value | 95 % CI |", "|---|---:|---:|"]
    for key in METRIC_KEYS:
        value = metrics.get(key)
        if isinstance(value, (int, float)):
            low_high = ci.get(key)
            interval = f"[{low_high[0]:.3f}, {low_high[1]:.3f}]" if low_high else "-"
            lines.append(f"| {key} | {value:.3f} | {interval} |")
    lines += ["", "## Example reports", "", "| id | generated | reference |", "|---|---|---|"]
    for row in rows[:n_examples]:
        cells = [str(row["id"]), row["prediction"], row["reference"]]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"
