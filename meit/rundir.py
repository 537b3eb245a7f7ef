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

import json
import os
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning.pytorch.plugins.io import TorchCheckpointIO
from safetensors.torch import load_file, save_file

from meit.config import RunConfig, run_config_from_dict
from meit.data.dataset import ECGReportDataset
from meit.data.measure import measure_ecg, with_machine_measurements
from meit.eval.grounding import check_report

WEIGHTS = "weights.safetensors"
BACKBONE = "backbone.json"
CONFIG = "config.yaml"
PREDICTIONS = "predictions.jsonl"
METRICS = "metrics.json"
REPORT = "report.md"
TABLE_METRICS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_1", "rouge_2", "rouge_l", "cider_d",
                 "bertscore_p", "bertscore_r", "bertscore_f1", "label_macro_f1", "label_ceiling_macro_f1",
                 "label_hamming", "label_auc", "ce_micro_f1", "ce_macro_f1", "ce_precision", "ce_recall")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file in the same folder, fsynced, then renamed (never half-written);
    read back with `torch.load(weights_only=True)` only."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def load_checkpoint(self, path: str | Path, map_location: Any = None, weights_only: bool | None = None) -> dict:
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)


def save_run(run_dir: Path, module: Any) -> None:
    """Writes the trainable weights (safetensors) and the backbone reference of a built `MEITModule`."""
    state = {k: v.detach().cpu().contiguous() for k, v in module.trainable_state_dict().items()}
    save_file(state, str(run_dir / WEIGHTS), metadata={"format": "meit-trainable-v1"})
    if hasattr(module, "save_extras"):  # e.g. the Mllama LoRA adapter in peft's layout (meit.image_branch)
        module.save_extras(run_dir)
    (run_dir / BACKBONE).write_text(json.dumps(module.backbone_reference, indent=2))


def read_config(run_dir: str | Path) -> RunConfig:
    """The `RunConfig` saved in a run directory's config.yaml."""
    return run_config_from_dict(yaml.safe_load((Path(run_dir) / CONFIG).read_text()))


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[Any, Any, RunConfig]:
    """Rebuilds a trained model from a run directory: config.yaml + backbone.json + weights.safetensors.

    Args:
        run_dir: a directory written by `python -m meit.fit`.
        device: where to put the model ("cpu" or "cuda").

    Returns:
        (the `MEITModule` in eval mode, its tokenizer, the run's config).

    Raises:
        FileNotFoundError: a file of the run, or the cached backbone it references, is missing.
    """
    from meit.backbone import load_backbone
    from meit.image_branch import build_module, make_module, needs_text_backbone

    run_dir = Path(run_dir)
    for name in (CONFIG, BACKBONE, WEIGHTS):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{run_dir / name} not found: is {run_dir} a finished `meit.fit` run directory?")
    cfg = read_config(run_dir)
    device_type, backbone = torch.device(device).type, None
    if needs_text_backbone(cfg.model):  # a real Mllama brings its own language model
        reference = json.loads((run_dir / BACKBONE).read_text())
        backbone = load_backbone(reference, cfg.model, device_type=device_type)
    module = make_module(cfg)
    build_module(module, backbone, device_type)
    module.load_trainable_state_dict(load_file(str(run_dir / WEIGHTS)))
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
        rows = [{k: v for k, v in row.items() if k != "labels_true"} for row in rows]
    with open(run_dir / PREDICTIONS, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    from meit.eval import evaluate_records

    metrics = evaluate_records(rows, bertscore_model=cfg.test.bertscore_model, n_bootstrap=cfg.test.n_bootstrap,
                               seed=0, metrics=cfg.test.metrics)
    (run_dir / METRICS).write_text(json.dumps(metrics, indent=2))
    (run_dir / REPORT).write_text(report_markdown(metrics, rows, cfg, info))
    return metrics


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
    for key in TABLE_METRICS:
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
