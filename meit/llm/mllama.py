"""LLaMA 3.2 Vision (transformers' Mllama classes) as an ECG-image-to-report model, tuned with LoRA.

The image branch's second model (DESIGN.md, arXiv 2501.18670): `MllamaForConditionalGeneration` + its processor,
LoRA (r=64, alpha=128, dropout 0.05) on every linear layer except `lm_head` (`embed_tokens` is no linear layer), the
chat turns user = image + instruction, assistant = report, loss on the report only, batched greedy generation.

Every model is loaded with `from_pretrained(folder_or_hub_id)` (the path real users take). On a CPU and in tests a
tiny Mllama is first written to a folder by `build_tiny_mllama`: a small vision tower built from config and a text
model whose self-attention layers are copied from a small `LlamaForCausalLM` (MEIT's embedded default backbone);
its cross-attention layers are fresh. Its processor is a real `MllamaProcessor` (image processor sized to the tiny
tower, the Llama tokenizer plus the `<|image|>` token, a chat template), so both models share one code path.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoProcessor,
    AutoTokenizer,
    MllamaConfig,
    MllamaForConditionalGeneration,
    MllamaProcessor,
    MllamaTextConfig,
    MllamaVisionConfig,
    PreTrainedModel,
)

from meit.fusion.splice import IGNORE_INDEX
from meit.llm.lora import LoRAConfig
from meit.util.atomic import write_json
from meit.util.locks import build_folder

try:  # transformers 5: the PIL backend (the default one needs torchvision)
    from transformers.models.mllama.image_processing_pil_mllama import MllamaImageProcessorPil as MllamaImages
    from transformers.models.mllama.image_processing_pil_mllama import get_all_supported_aspect_ratios
except ImportError:  # transformers 4
    from transformers.models.mllama.image_processing_mllama import MllamaImageProcessor as MllamaImages
    from transformers.models.mllama.image_processing_mllama import get_all_supported_aspect_ratios

LLAMA32_VISION = "meta-llama/Llama-3.2-11B-Vision-Instruct"
TINY = "tiny"
IMAGE_TOKEN = "<|image|>"
MLLAMA_TOWERS = ("language_model", "multi_modal_projector", "vision_model")
"""The parts of `MllamaForConditionalGeneration.model` that LoRA can adapt (`lm_head` never is)."""
TEXT_TOWERS = ("language_model",)
"""`lora.targets` for LoRA on the text model only (self- and cross-attention layers)."""
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
TINY_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ message['role'] }}:\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|image|>{% else %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{ eos_token }}{% endfor %}{% if add_generation_prompt %}assistant:\n{% endif %}"
)
"""The tiny model's chat template: Llama 3's turn structure with plain-text role headers and `</s>` as end of turn."""
TINY_META = "meit_tiny_mllama.json"
TINY_FORMAT_VERSION = 1

ImageLike = Image.Image | np.ndarray | torch.Tensor


# ------------------------------------------------------------------------------------------------------- configs


@dataclass
class TinyMllamaSpec:
    """Shape of the tiny Mllama built for CPU runs and tests (the text side comes from a small Llama)."""

    image_size: int = 112
    """Side of one square tile in pixels (the real model: 560)."""
    patch_size: int = 14
    """Side of one vision patch in pixels."""
    max_num_tiles: int = 4
    """Tiles an image is split into at most (aspect-ratio tiling as in the real model)."""
    vision_hidden_size: int = 64
    """Width of the vision tower."""
    vision_layers: int = 2
    """Layers of the local vision encoder."""
    vision_global_layers: int = 1
    """Layers of the global (gated) vision encoder."""
    vision_heads: int = 4
    """Attention heads of the vision tower."""
    intermediate_layers_indices: list[int] = field(default_factory=lambda: [0])
    """Local-encoder layers whose outputs are concatenated to the vision features (the real model: 5 of 32)."""
    cross_attention_layers: list[int] = field(default_factory=lambda: [1, 4])
    """Indices of the cross-attention layers in the combined text stack (Llama layers + these)."""
    gate_init: float = 0.5
    """Initial value of the fresh cross-attention gates (tanh-gated; 0 would make the image invisible)."""
    seed: int = 0
    """Seed of the fresh weights (vision tower, projector, cross-attention layers)."""


@dataclass
class VisionLLMConfig:
    """LLaMA 3.2 Vision with LoRA (arXiv 2501.18670): model and adapters (its report limit is
    `data.max_report_tokens`, the same as the fusion models')."""

    model: str = TINY
    """`tiny` (built on the text backbone, for CPUs) or a Mllama folder or hub id (`meta-llama/Llama-3.2-11B-...`)."""
    lora: LoRAConfig = field(default_factory=lambda: LoRAConfig(r=64, alpha=128, dropout=0.05))
    """LoRA (paper: r 64, alpha 128, dropout 0.05); `targets` are towers whose linear layers get adapters, of
    `language_model`, `multi_modal_projector`, `vision_model` (default: all three, i.e. every linear layer except
    `lm_head`, as the paper); `[language_model]` adapts the text side only."""
    tiny: TinyMllamaSpec = field(default_factory=TinyMllamaSpec)
    """Shape of the `tiny` model (ignored otherwise)."""


# ------------------------------------------------------------------------------------------------- tiny builder


def mllama_config_from_llama(llama_config: Any, spec: TinyMllamaSpec, image_token_id: int) -> MllamaConfig:
    """A `MllamaConfig` whose text model is `llama_config` plus `spec.cross_attention_layers` cross-attention layers.

    Args:
        llama_config: the `LlamaConfig` of the text backbone.
        spec: the vision tower and cross-attention layout.
        image_token_id: id of `<|image|>` (the first id after the Llama vocabulary).

    Raises:
        ValueError: a cross-attention index outside the combined stack, or an intermediate layer outside the tower.
    """
    n_layers = llama_config.num_hidden_layers + len(spec.cross_attention_layers)
    cross = sorted(set(spec.cross_attention_layers))
    if len(cross) != len(spec.cross_attention_layers) or any(not 0 <= i < n_layers for i in cross):
        raise ValueError(f"cross_attention_layers {spec.cross_attention_layers} must be distinct in [0, {n_layers})")
    if any(not 0 <= i < spec.vision_layers for i in spec.intermediate_layers_indices):
        raise ValueError(f"intermediate_layers_indices {spec.intermediate_layers_indices} must be in "
                         f"[0, {spec.vision_layers})")
    text = MllamaTextConfig(
        vocab_size=llama_config.vocab_size, hidden_size=llama_config.hidden_size,
        intermediate_size=llama_config.intermediate_size, num_hidden_layers=n_layers,
        num_attention_heads=llama_config.num_attention_heads, num_key_value_heads=llama_config.num_key_value_heads,
        hidden_act=llama_config.hidden_act, rms_norm_eps=llama_config.rms_norm_eps,
        rope_parameters=dict(llama_config.rope_parameters), cross_attention_layers=cross,
        max_position_embeddings=llama_config.max_position_embeddings, bos_token_id=llama_config.bos_token_id,
        eos_token_id=llama_config.eos_token_id, pad_token_id=llama_config.pad_token_id, tie_word_embeddings=False,
    )
    vision = MllamaVisionConfig(
        hidden_size=spec.vision_hidden_size, intermediate_size=4 * spec.vision_hidden_size,
        num_hidden_layers=spec.vision_layers, num_global_layers=spec.vision_global_layers,
        attention_heads=spec.vision_heads, image_size=spec.image_size, patch_size=spec.patch_size,
        max_num_tiles=spec.max_num_tiles, intermediate_layers_indices=list(spec.intermediate_layers_indices),
        supported_aspect_ratios=[list(r) for r in get_all_supported_aspect_ratios(spec.max_num_tiles)],
        vision_output_dim=spec.vision_hidden_size * (len(spec.intermediate_layers_indices) + 1),
    )
    return MllamaConfig(vision_config=vision, text_config=text, image_token_index=image_token_id)


def self_attention_layer_map(n_llama_layers: int, cross_attention_layers: Sequence[int]) -> dict[int, int]:
    """Llama layer index -> index of the Mllama self-attention layer that receives it (order is kept)."""
    cross = set(cross_attention_layers)
    targets = [i for i in range(n_llama_layers + len(cross)) if i not in cross]
    return dict(enumerate(targets))


def mllama_from_llama(llama: PreTrainedModel, spec: TinyMllamaSpec, image_token_id: int | None = None
                      ) -> MllamaForConditionalGeneration:
    """A Mllama whose self-attention text layers, embeddings, final norm and head are copied from `llama`.

    Cross-attention layers, the vision tower and the projector are fresh (seeded by `spec.seed`); the
    cross-attention gates start at `spec.gate_init`. The 8 extra embedding rows Mllama keeps after the vocabulary
    (the first is `<|image|>`) start at the mean Llama embedding.

    Args:
        llama: a `LlamaForCausalLM` (e.g. MEIT's embedded default backbone).
        spec: the vision tower and cross-attention layout.
        image_token_id: id of `<|image|>` (default: the Llama vocabulary size).
    """
    vocab = llama.config.vocab_size
    config = mllama_config_from_llama(llama.config, spec, vocab if image_token_id is None else image_token_id)
    torch.manual_seed(spec.seed)
    model = MllamaForConditionalGeneration(config).to(llama.dtype)
    text, source = model.model.language_model, llama.model
    mapping = self_attention_layer_map(len(source.layers), config.text_config.cross_attention_layers)
    with torch.no_grad():
        text.embed_tokens.weight[:vocab].copy_(source.embed_tokens.weight)
        text.embed_tokens.weight[vocab:].copy_(source.embed_tokens.weight.mean(0))
        text.norm.load_state_dict(source.norm.state_dict())
        model.lm_head.weight.copy_(llama.get_output_embeddings().weight)
        for src, dst in mapping.items():
            text.layers[dst].load_state_dict(source.layers[src].state_dict())
        for i in config.text_config.cross_attention_layers:
            text.layers[i].cross_attn_attn_gate.fill_(spec.gate_init)
            text.layers[i].cross_attn_mlp_gate.fill_(spec.gate_init)
    return model


def tiny_processor(tokenizer: Any, spec: TinyMllamaSpec) -> MllamaProcessor:
    """A real `MllamaProcessor` for the tiny model: tiles of `spec.image_size`, CLIP normalisation, `<|image|>`.

    Args:
        tokenizer: the Llama tokenizer; `<|image|>` is added to it as a special token (id = its old length).
        spec: tile size and number.
    """
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    size = {"height": spec.image_size, "width": spec.image_size}
    images = MllamaImages(size=size, max_image_tiles=spec.max_num_tiles, image_mean=CLIP_MEAN, image_std=CLIP_STD)
    return MllamaProcessor(images, tokenizer, chat_template=TINY_CHAT_TEMPLATE)


def build_tiny_mllama(llama_dir: str | Path, out_dir: str | Path, spec: TinyMllamaSpec | None = None) -> Path:
    """Writes a tiny Mllama (model + processor, `save_pretrained` layout) built on the Llama in `llama_dir`.

    Args:
        llama_dir: a `LlamaForCausalLM` folder with its tokenizer (e.g. the embedded backbone's cache folder).
        out_dir: where to write; replaced if it exists.
        spec: the vision tower and cross-attention layout.

    Returns:
        `out_dir`, loadable with `MllamaReportModel.from_pretrained`.
    """
    spec = spec or TinyMllamaSpec()
    llama = AutoModelForCausalLM.from_pretrained(llama_dir, dtype=torch.float32)
    processor = tiny_processor(AutoTokenizer.from_pretrained(llama_dir), spec)
    model = mllama_from_llama(llama, spec, processor.image_token_id)
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    out_dir = Path(out_dir)
    shutil.rmtree(out_dir, ignore_errors=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


def tiny_mllama_folder(llama_dir: str | Path, spec: TinyMllamaSpec, root: str | Path) -> Path:
    """The cached tiny Mllama for (`llama_dir`'s files, `spec`) under `root`, built once.

    Returns:
        A folder for `MllamaReportModel.from_pretrained`; its name holds a hash of the Llama files and the spec.
    """
    digest = hashlib.sha256(json.dumps({"v": TINY_FORMAT_VERSION, "spec": asdict(spec)}, sort_keys=True).encode())
    for path in sorted(Path(llama_dir).iterdir()):
        if path.is_file():
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    folder = Path(root) / f"tiny-mllama-{digest.hexdigest()[:16]}"

    def build(tmp: Path) -> None:
        build_tiny_mllama(llama_dir, tmp, spec)
        write_json(tmp / TINY_META, {"llama": str(llama_dir), "spec": asdict(spec)})

    return build_folder(folder, TINY_META, build)


# ----------------------------------------------------------------------------------------------------------- LoRA


def lora_target_regex(model: nn.Module, towers: Sequence[str] = MLLAMA_TOWERS) -> str:
    """A peft `target_modules` regex matching every `nn.Linear` of `towers` (never `lm_head`).

    Leaf names are read from the model (Llama 3.2 Vision: q/k/v/o, gate/up/down in the text model, q/k/v/o,
    fc1/fc2 in the vision tower; the projector is one linear layer), so the regex fits any Mllama size.

    Raises:
        ValueError: an unknown tower, or a tower without linear layers.
    """
    unknown = set(towers) - set(MLLAMA_TOWERS)
    if unknown or not towers:
        given = ", ".join(sorted(unknown)) or "none given"
        raise ValueError(f"unknown LoRA tower: {given}; choose from {', '.join(MLLAMA_TOWERS)}")
    parts = []
    for tower in towers:
        module = getattr(model.model, tower)
        if isinstance(module, nn.Linear):
            parts.append(rf"model\.{tower}")
            continue
        leaves = sorted({name.rsplit(".", 1)[-1] for name, m in module.named_modules() if isinstance(m, nn.Linear)})
        if not leaves:
            raise ValueError(f"LoRA tower {tower} has no linear layers")
        parts.append(rf"model\.{tower}\..*\.(?:{'|'.join(map(re.escape, leaves))})")
    return rf"^(?:{'|'.join(parts)})$"


def apply_mllama_lora(model: MllamaForConditionalGeneration, cfg: LoRAConfig) -> nn.Module:
    """Wraps a Mllama in a peft `PeftModel` with LoRA on the linear layers of the towers `cfg.targets` (default:
    all); the rest is frozen.

    Returns:
        The `PeftModel` (its `save_pretrained` writes the adapter only).
    """
    from peft import LoraConfig, get_peft_model

    towers = cfg.targets or MLLAMA_TOWERS
    config = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                        target_modules=lora_target_regex(model, towers), bias="none")
    return get_peft_model(model, config)


# ---------------------------------------------------------------------------------------------------- the model


def to_pil(image: ImageLike) -> Image.Image:
    """An RGB PIL image from a PIL image, a uint8 (H, W, 3) array (`meit.data.render.render`) or a float (3, H, W)
    tensor in [0, 1] (`ImageTransform`, `load_ecg_image`).

    Raises:
        ValueError: an array or tensor of another shape or dtype.
    """
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] not in (1, 3) or not image.is_floating_point():
            raise ValueError(f"expected a float (3, H, W) image tensor in [0, 1], got {tuple(image.shape)} "
                             f"{image.dtype}")
        image = (image.detach().float().clamp(0, 1).expand(3, -1, -1) * 255).round().byte().permute(1, 2, 0)
        image = image.cpu().numpy()
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"expected a uint8 (H, W, 3) image array, got {array.shape} {array.dtype}")
    return Image.fromarray(array, mode="RGB")


class MllamaReportModel(nn.Module):
    """LLaMA 3.2 Vision (or a tiny Mllama) writing a report for an ECG image: training loss and greedy generation.

    Args:
        model: a `MllamaForConditionalGeneration`, usually LoRA-wrapped by `apply_mllama_lora`.
        processor: its `MllamaProcessor` (image processor, tokenizer with `<|image|>`, chat template).
    """

    def __init__(self, model: nn.Module, processor: Any) -> None:
        super().__init__()
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        pad = self.tokenizer.pad_token_id
        self.pad_id = self.tokenizer.eos_token_id if pad is None else pad
        self.stop_ids = self._stop_ids()
        self.end_ids = self._end_of_turn_ids()

    @classmethod
    def from_pretrained(cls, path: str | Path, cfg: VisionLLMConfig | None = None, adapter: str | Path | None = None,
                        device_type: str = "cpu", gradient_checkpointing: bool = False,
                        attn_implementation: str = "sdpa", trust_remote_code: bool = False) -> MllamaReportModel:
        """Loads a Mllama folder or hub id with its processor, then adds LoRA (or loads a saved adapter).

        Args:
            path: a Mllama checkpoint folder or hub id (`meta-llama/Llama-3.2-11B-Vision-Instruct`, a tiny folder).
            cfg: LoRA settings and report length (default `VisionLLMConfig()`); `lora.r <= 0` leaves no adapter.
            adapter: a folder written by `save_adapter`; loaded (trainable) instead of fresh LoRA weights.
            device_type: "cuda" loads bf16 weights, anything else fp32 (bf16 matmuls crawl on CPUs).
            gradient_checkpointing: recompute activations in the backward pass.
            attn_implementation: `sdpa` (default) or `eager`.
            trust_remote_code: passed to `from_pretrained`.
        """
        cfg = cfg or VisionLLMConfig()
        dtype = torch.bfloat16 if device_type == "cuda" else torch.float32
        base = MllamaForConditionalGeneration.from_pretrained(
            path, dtype=dtype, attn_implementation=attn_implementation, trust_remote_code=trust_remote_code)
        processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
        for p in base.parameters():
            p.requires_grad_(False)
        if gradient_checkpointing:
            enable_checkpointing(base)
        if adapter is not None:
            from peft import PeftModel

            model: nn.Module = PeftModel.from_pretrained(base, str(adapter), is_trainable=True)
        elif cfg.lora.r > 0:
            model = apply_mllama_lora(base, cfg.lora)
        else:
            model = base
        return cls(model, processor)

    # ------------------------------------------------------------------------------------------------ prompts

    def prompt_text(self, instruction: str) -> str:
        """The chat-template text of a user turn (image + instruction) followed by the assistant header."""
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def _stop_ids(self) -> list[int]:
        """Token ids that end generation: the generation config's EOS ids and the tokenizer's."""
        configured = getattr(self.base_model.generation_config, "eos_token_id", None)
        ids = configured if isinstance(configured, list) else [configured]
        return sorted({i for i in [*ids, self.tokenizer.eos_token_id] if i is not None})

    def _end_of_turn_ids(self) -> list[int]:
        """Tokens the chat template puts after an assistant message, up to the first stop token (`<|eot_id|>`).

        Raises:
            ValueError: the template does not render the generation prompt as a prefix of a full conversation.
        """
        sentinel = "\x00REPORT\x00"
        user = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "x"}]}]
        full = self.processor.apply_chat_template(
            [*user, {"role": "assistant", "content": [{"type": "text", "text": sentinel}]}], tokenize=False)
        prompt = self.processor.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
        if not full.startswith(prompt) or sentinel not in full:
            raise ValueError("the chat template's generation prompt is not a prefix of the assistant turn")
        ids = self.tokenizer(full.split(sentinel, 1)[1], add_special_tokens=False).input_ids
        stops = [k for k, i in enumerate(ids) if i in self.stop_ids]
        return ids[: stops[0] + 1] if stops else ids

    # ---------------------------------------------------------------------------------------------- batching

    @property
    def base_model(self) -> MllamaForConditionalGeneration:
        """The `MllamaForConditionalGeneration` inside the peft wrapper."""
        get_base = getattr(self.model, "get_base_model", None)
        return get_base() if callable(get_base) else self.model

    def encode(self, images: Sequence[ImageLike] | torch.Tensor, instructions: str | Sequence[str],
               reports: Sequence[str] | None = None, max_report_tokens: int | None = None) -> dict[str, torch.Tensor]:
        """Model inputs for a batch (CPU tensors; usable in a DataLoader `collate_fn`).

        With `reports` (training): right padding, `labels` = report + end-of-turn tokens, -100 elsewhere (chat
        template, image token, instruction, padding). Without (generation): left padding, no labels.

        Args:
            images: one image per example (PIL, uint8 (H, W, 3) arrays, float (3, H, W) tensors) or a (B, 3, H, W)
                float tensor in [0, 1].
            instructions: one instruction for all examples or one per example.
            reports: the target reports.
            max_report_tokens: longest training target in tokens, the end-of-turn tokens included (the report is
                truncated before them; None: no limit).

        Returns:
            input_ids, attention_mask, cross_attention_mask (B, L, 1, tiles), pixel_values (B, 1, tiles, 3, h, w),
            aspect_ratio_ids (B, 1), aspect_ratio_mask (B, 1, tiles) and, with reports, labels.
        """
        pils = [to_pil(image) for image in images]
        texts = [instructions] * len(pils) if isinstance(instructions, str) else list(instructions)
        if len(texts) != len(pils) or (reports is not None and len(reports) != len(pils)):
            raise ValueError(f"{len(pils)} images, {len(texts)} instructions, "
                             f"{'no' if reports is None else len(reports)} reports: counts must match")
        prompts = [self.tokenizer(self.prompt_text(t), add_special_tokens=False).input_ids for t in texts]
        targets = None
        if reports is not None:
            room = None if max_report_tokens is None else max(max_report_tokens - len(self.end_ids), 0)
            targets = [self.tokenizer(r, add_special_tokens=False).input_ids[:room] + self.end_ids for r in reports]
        vision = self.processor.image_processor(images=[[p] for p in pils], return_tensors="pt")
        batch = self._pad(prompts, targets, left=reports is None)
        batch["cross_attention_mask"] = self._cross_attention_mask(batch["input_ids"], vision.pop("num_tiles"))
        batch.update({k: vision[k] for k in ("pixel_values", "aspect_ratio_ids", "aspect_ratio_mask")})
        return batch

    def _pad(self, prompts: list[list[int]], targets: list[list[int]] | None, left: bool) -> dict[str, torch.Tensor]:
        """Padded input_ids and attention_mask (+ labels when `targets` are given)."""
        rows = [p + (targets[k] if targets else []) for k, p in enumerate(prompts)]
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        for k, row in enumerate(rows):
            start = width - len(row) if left else 0
            input_ids[k, start: start + len(row)] = torch.tensor(row)
            mask[k, start: start + len(row)] = 1
            if targets:
                labels[k, start + len(prompts[k]): start + len(row)] = torch.tensor(targets[k])
        batch = {"input_ids": input_ids, "attention_mask": mask}
        if targets:
            batch["labels"] = labels
        return batch

    def _cross_attention_mask(self, input_ids: torch.Tensor, num_tiles: list[list[int]]) -> torch.Tensor:
        """(B, L, 1, max_tiles): text from the image token to the end sees the image's real tiles (as the processor).

        Raises:
            ValueError: a prompt without exactly one image token.
        """
        max_tiles = self.processor.image_processor.max_image_tiles
        mask = torch.zeros((*input_ids.shape, 1, max_tiles), dtype=torch.long)
        for k, row in enumerate(input_ids):
            where = (row == self.image_token_id).nonzero().flatten().tolist()
            if len(where) != 1:
                raise ValueError(f"example {k}: expected one {IMAGE_TOKEN} token in the prompt, found {len(where)}")
            mask[k, where[0]:, 0, : num_tiles[k][0]] = 1
        return mask

    def _on_device(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The batch's tensors on the model's device."""
        device = next(self.model.parameters()).device
        return {k: v.to(device) for k, v in batch.items()}

    # ----------------------------------------------------------------------------------------- train and decode

    def forward(self, images: Mapping[str, torch.Tensor] | Sequence[ImageLike] | torch.Tensor,
                instructions: str | Sequence[str] | None = None, reports: Sequence[str] | None = None
                ) -> torch.Tensor:
        """Mean cross-entropy over the report tokens.

        Args:
            images: a batch from `encode(..., reports)`, or images (then `instructions` and `reports` are needed).
            instructions: one instruction or one per example.
            reports: the target reports.
        """
        if not isinstance(images, Mapping):
            if instructions is None or reports is None:
                raise ValueError("forward on raw images needs `instructions` and `reports`")
            images = self.encode(images, instructions, reports)
        if "labels" not in images:
            raise ValueError("the batch has no labels: encode it with reports")
        return self.model(**self._on_device(images), use_cache=False).loss

    def logits(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Next-token logits (B, L, vocab) of an encoded batch (no loss)."""
        inputs = {k: v for k, v in self._on_device(batch).items() if k != "labels"}
        return self.model(**inputs, use_cache=False).logits

    @torch.no_grad()
    def generate(self, images: Mapping[str, torch.Tensor] | Sequence[ImageLike] | torch.Tensor,
                 instruction: str | Sequence[str] | None = None, max_new_tokens: int = 64,
                 num_beams: int = 1) -> list[str]:
        """Greedy (or beam), batched report generation (left padding, KV cache, cross-attention mask grown per token).

        Args:
            images: images, or a batch from `encode(images, instruction)` (no reports).
            instruction: one instruction or one per example (needed with raw images).
            max_new_tokens: longest report in tokens.
            num_beams: 1 = greedy, > 1 = Hugging Face beam search.

        Returns:
            One decoded report per image, special tokens removed, stripped.
        """
        if not isinstance(images, Mapping):
            if instruction is None:
                raise ValueError("generate on raw images needs an `instruction`")
            images = self.encode(images, instruction)
        batch = self._on_device({k: v for k, v in images.items() if k != "labels"})
        was_training = self.model.training
        self.model.eval()
        try:
            out = self.model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, num_beams=num_beams,
                                      eos_token_id=self.stop_ids, pad_token_id=self.pad_id, use_cache=True)
        finally:
            self.model.train(was_training)
        new = out[:, batch["input_ids"].shape[1]:]
        return [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]

    # ------------------------------------------------------------------------------------------------ weights

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters that train (the LoRA matrices)."""
        return [p for p in self.model.parameters() if p.requires_grad]

    def count_trainable(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.trainable_parameters())

    def save_adapter(self, folder: str | Path) -> Path:
        """Writes the LoRA adapter (peft `adapter_config.json` + safetensors) to `folder`; reload with
        `MllamaReportModel.from_pretrained(path, adapter=folder)`.

        Raises:
            TypeError: the model carries no peft adapter.
        """
        if not hasattr(self.model, "peft_config"):
            raise TypeError("this model has no LoRA adapter to save (lora.r <= 0)")
        self.model.save_pretrained(str(folder))
        return Path(folder)


def enable_checkpointing(model: PreTrainedModel) -> None:
    """Non-reentrant activation checkpointing (transformers 5's name, or the older `gradient_checkpointing_enable`)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.config.use_cache = False


def load_report_model(cfg: VisionLLMConfig, text_backbone_dir: str | Path | None = None,
                      cache_root: str | Path | None = None, **kwargs: Any) -> MllamaReportModel:
    """The image-branch entry point: resolves `cfg.model` (building the tiny model once) and loads it.

    Args:
        cfg: the vision-LLM config.
        text_backbone_dir: the Llama folder the tiny model is built on (needed when `cfg.model == "tiny"`).
        cache_root: where tiny models are cached (needed with `tiny`).
        **kwargs: passed to `MllamaReportModel.from_pretrained` (device_type, gradient_checkpointing, adapter, ...).

    Raises:
        ValueError: `tiny` without a text backbone folder or a cache root.
    """
    path: str | Path = cfg.model
    if cfg.model == TINY:
        if text_backbone_dir is None or cache_root is None:
            raise ValueError("the tiny Mllama is built on a Llama folder: pass text_backbone_dir and cache_root")
        path = tiny_mllama_folder(text_backbone_dir, cfg.tiny, cache_root)
    return MllamaReportModel.from_pretrained(path, cfg, **kwargs)
