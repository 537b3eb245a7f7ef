"""LLaMA 3.2 Vision branch (`meit.llm.mllama`) on a tiny Mllama built from a small Llama, saved and reloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn
from transformers import AutoTokenizer, LlamaForCausalLM, MllamaForConditionalGeneration

from meit.config import EmbeddedLMConfig
from meit.data.render import RenderConfig, example_signal, render
from meit.llm.backbone import init_llama, pretrain, train_tokenizer
from meit.llm.lora import LoRAConfig
from meit.llm.mllama import (
    IGNORE_INDEX,
    IMAGE_TOKEN,
    LLAMA32_VISION,
    MLLAMA_TOWERS,
    TEXT_TOWERS,
    MllamaReportModel,
    TinyMllamaSpec,
    VisionLLMConfig,
    build_tiny_mllama,
    load_report_model,
    lora_target_regex,
    mllama_from_llama,
    self_attention_layer_map,
)

PRESET = Path(__file__).parent.parent / "configs" / "llama32_vision_lora.yaml"
CORPUS = ["sinus rhythm. normal ecg.", "atrial fibrillation with rapid ventricular response.",
          "sinus bradycardia. left axis deviation.", "describe the ecg image:"] * 10
INSTRUCTION = "describe the ecg image:"
SPEC = TinyMllamaSpec(image_size=56, patch_size=14, vision_hidden_size=32, vision_heads=2,
                      cross_attention_layers=[1, 3], gate_init=0.5)
LORA = VisionLLMConfig(lora=LoRAConfig(r=4, alpha=8, dropout=0.0))


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random Llama (2 layers, grouped-query attention) with a BPE tokenizer, in `save_pretrained` layout."""
    folder = tmp_path_factory.mktemp("llama")
    tokenizer = train_tokenizer(CORPUS, 300, 128)
    cfg = EmbeddedLMConfig(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128,
                           max_position_embeddings=256, seed=1)
    model = init_llama(cfg, tokenizer)
    model.config.rope_parameters = {"rope_type": "default", "rope_theta": 1234.0}  # must be copied, not defaulted
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pretrained_tiny_dir(llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Mllama on a Llama briefly pre-trained on the corpus (a random Llama's head cannot become confident)."""
    folder = tmp_path_factory.mktemp("pretrained")
    llama, tokenizer = LlamaForCausalLM.from_pretrained(llama_dir), AutoTokenizer.from_pretrained(llama_dir)
    pretrain(llama, tokenizer, CORPUS, EmbeddedLMConfig(pretrain_steps=60, pretrain_batch_size=8, pretrain_lr=3e-3))
    llama.save_pretrained(folder / "llama")
    tokenizer.save_pretrained(folder / "llama")
    return build_tiny_mllama(folder / "llama", folder / "tiny", SPEC)


@pytest.fixture(scope="module")
def tiny_dir(llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_mllama(llama_dir, tmp_path_factory.mktemp("mllama") / "tiny", SPEC)


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    """Two different rendered ECG pages (uint8 H x W x 3): 60 bpm on red paper, 110 bpm photocopied."""
    return [render(example_signal(100.0, heart_rate=rate, seed=k), 100.0, RenderConfig(dpi=50, black_and_white=bw),
                   seed=k) for k, (rate, bw) in enumerate(((60.0, False), (110.0, True)))]


def load(tiny_dir: Path, cfg: VisionLLMConfig = LORA, **kwargs) -> MllamaReportModel:
    torch.manual_seed(0)
    return MllamaReportModel.from_pretrained(tiny_dir, cfg, **kwargs)


def randomise_lora(model: MllamaReportModel, seed: int = 0) -> None:
    """LoRA B starts at zero (a no-op adapter): give every adapter weight random values so it changes outputs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)


# ------------------------------------------------------------------------------------------------ tiny builder


def test_text_layers_copied_from_llama(llama_dir: Path) -> None:
    llama = LlamaForCausalLM.from_pretrained(llama_dir)
    mllama = mllama_from_llama(llama, SPEC)
    text, vocab = mllama.model.language_model, llama.config.vocab_size
    mapping = self_attention_layer_map(2, SPEC.cross_attention_layers)
    assert mapping == {0: 0, 1: 2}
    for src, dst in mapping.items():
        source = llama.model.layers[src].state_dict()
        target = text.layers[dst].state_dict()
        assert set(source) == set(target)
        for key, value in source.items():
            assert torch.equal(value, target[key]), key
    assert torch.equal(text.embed_tokens.weight[:vocab], llama.model.embed_tokens.weight)
    assert torch.equal(mllama.lm_head.weight, llama.lm_head.weight)
    assert torch.equal(text.norm.weight, llama.model.norm.weight)
    for i in SPEC.cross_attention_layers:
        assert hasattr(text.layers[i], "cross_attn")
        assert text.layers[i].cross_attn_attn_gate.item() == pytest.approx(SPEC.gate_init)
    assert mllama.config.image_token_index == vocab
    assert mllama.config.text_config.pad_token_id == llama.config.pad_token_id
    vision = mllama.config.vision_config
    assert vision.vision_output_dim == vision.hidden_size * (len(vision.intermediate_layers_indices) + 1)


def test_text_only_logits_equal_llama(llama_dir: Path, tiny_dir: Path) -> None:
    llama = LlamaForCausalLM.from_pretrained(llama_dir).eval()
    mllama = MllamaForConditionalGeneration.from_pretrained(tiny_dir).eval()
    ids = torch.tensor([[1, 40, 41, 42, 43, 44, 45, 2]])
    with torch.no_grad():  # without an image the cross-attention layers are skipped: the Llama must come out
        expected = llama(input_ids=ids).logits
        got = mllama(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=1e-5)


def test_bad_tiny_layouts_rejected(llama_dir: Path) -> None:
    llama = LlamaForCausalLM.from_pretrained(llama_dir)
    with pytest.raises(ValueError, match="cross_attention_layers"):
        mllama_from_llama(llama, TinyMllamaSpec(cross_attention_layers=[1, 9]))
    with pytest.raises(ValueError, match="intermediate_layers_indices"):
        mllama_from_llama(llama, TinyMllamaSpec(cross_attention_layers=[1], intermediate_layers_indices=[2]))


def test_tiny_model_is_cached_once(llama_dir: Path, tmp_path: Path) -> None:
    cfg = VisionLLMConfig(lora=LoRAConfig(r=2, alpha=4), tiny=SPEC)
    first = load_report_model(cfg, llama_dir, tmp_path)
    folders = sorted(p for p in tmp_path.iterdir() if p.is_dir())  # beside it: its build's .lock file
    second = load_report_model(cfg, llama_dir, tmp_path)
    assert sorted(p for p in tmp_path.iterdir() if p.is_dir()) == folders and len(folders) == 1
    assert first.count_trainable() == second.count_trainable() > 0
    with pytest.raises(ValueError, match="text_backbone_dir"):
        load_report_model(cfg)


# ------------------------------------------------------------------------------------------------------- LoRA


def expected_lora_parameters(base: nn.Module, r: int, towers: tuple[str, ...]) -> int:
    """r * (in + out) for every nn.Linear under `model.<tower>` (lm_head lives outside `model`)."""
    total = 0
    for name, module in base.named_modules():
        parts = name.split(".")
        if isinstance(module, nn.Linear) and parts[0] == "model" and parts[1] in towers:
            total += r * (module.in_features + module.out_features)
    return total


@pytest.mark.parametrize("towers", [MLLAMA_TOWERS, TEXT_TOWERS])
def test_trainable_parameter_count(tiny_dir: Path, towers: tuple[str, ...]) -> None:
    base = MllamaForConditionalGeneration.from_pretrained(tiny_dir)
    expected = expected_lora_parameters(base, 4, towers)
    model = load(tiny_dir, VisionLLMConfig(lora=LoRAConfig(r=4, alpha=8, targets=list(towers))))
    assert model.count_trainable() == expected
    trainable = [n for n, p in model.model.named_parameters() if p.requires_grad]
    assert all("lora_" in n for n in trainable)
    assert not any("lm_head" in n or "embed_tokens" in n for n in trainable)
    assert any("multi_modal_projector" in n for n in trainable) == ("multi_modal_projector" in towers)
    assert any("vision_model" in n for n in trainable) == ("vision_model" in towers)
    assert any("cross_attn" in n for n in trainable)  # text cross-attention layers are linear layers too


def test_unknown_tower_rejected(tiny_dir: Path) -> None:
    base = MllamaForConditionalGeneration.from_pretrained(tiny_dir)
    with pytest.raises(ValueError, match="unknown LoRA tower"):
        lora_target_regex(base, ["language_model", "audio_model"])


# ----------------------------------------------------------------------------------------------- batches


def test_label_mask_covers_report_tokens_only(tiny_dir: Path, images: list[np.ndarray]) -> None:
    model = load(tiny_dir)
    reports = ["sinus rhythm. normal ecg.", "atrial fibrillation with rapid ventricular response."]
    batch = model.encode(images, INSTRUCTION, reports)
    tok = model.tokenizer
    prompt_len = len(tok(model.prompt_text(INSTRUCTION), add_special_tokens=False).input_ids)
    for k, report in enumerate(reports):
        target = tok(report, add_special_tokens=False).input_ids + [tok.eos_token_id]
        n_real = int(batch["attention_mask"][k].sum())
        assert batch["attention_mask"][k, :n_real].all() and not batch["attention_mask"][k, n_real:].any()
        labels = batch["labels"][k]
        assert (labels[:prompt_len] == IGNORE_INDEX).all()  # template, image token, instruction
        assert labels[prompt_len:n_real].tolist() == target
        assert batch["input_ids"][k, prompt_len:n_real].tolist() == target
        assert (labels[n_real:] == IGNORE_INDEX).all()  # padding
        image_at = (batch["input_ids"][k] == model.image_token_id).nonzero().item()
        assert labels[image_at] == IGNORE_INDEX
        assert tok.decode(labels[labels != IGNORE_INDEX], skip_special_tokens=True) == report
    n_targets = sum(len(tok(r, add_special_tokens=False).input_ids) + 1 for r in reports)  # + end of turn
    assert (batch["labels"] != IGNORE_INDEX).sum() == n_targets


def test_encode_matches_the_processor(tiny_dir: Path, images: list[np.ndarray]) -> None:
    model = load(tiny_dir)
    prompt = model.prompt_text(INSTRUCTION)
    assert prompt.count(IMAGE_TOKEN) == 1
    reference = model.processor(images=[images[0]], text=[prompt], add_special_tokens=False, return_tensors="pt")
    ours = model.encode([images[0]], INSTRUCTION)
    for key in ("input_ids", "attention_mask", "pixel_values", "aspect_ratio_ids", "aspect_ratio_mask",
                "cross_attention_mask"):
        assert torch.equal(ours[key], torch.as_tensor(reference[key])), key
    assert ours["pixel_values"].shape[:3] == (1, 1, SPEC.max_num_tiles)


def test_image_formats_agree(tiny_dir: Path, images: list[np.ndarray]) -> None:
    from PIL import Image

    model = load(tiny_dir)
    as_tensor = torch.from_numpy(images[0]).permute(2, 0, 1).float() / 255
    pixels = [model.encode([img], INSTRUCTION)["pixel_values"]
              for img in (images[0], Image.fromarray(images[0]), as_tensor)]
    assert torch.equal(pixels[0], pixels[1]) and torch.equal(pixels[0], pixels[2])
    with pytest.raises(ValueError, match="uint8"):
        model.encode([images[0].astype(np.float32)], INSTRUCTION)


def test_left_padding_for_generation(tiny_dir: Path, images: list[np.ndarray]) -> None:
    model = load(tiny_dir)
    batch = model.encode(images, ["short:", "a much longer instruction for the second ecg:"])
    assert "labels" not in batch
    mask, cross = batch["attention_mask"], batch["cross_attention_mask"]
    assert mask[:, -1].all() and not mask[0, 0]
    image_at = (batch["input_ids"][0] == model.image_token_id).nonzero().item()
    assert not cross[0, :image_at].any() and cross[0, image_at:].all()


# ------------------------------------------------------------------------------------------ model behaviour


def test_image_conditions_the_logits(tiny_dir: Path, images: list[np.ndarray]) -> None:
    model = load(tiny_dir).eval()
    with torch.no_grad():
        same = model.logits(model.encode([images[0], images[0]], INSTRUCTION))
        different = model.logits(model.encode(images, INSTRUCTION))
    assert torch.allclose(same[0], same[1], atol=1e-5)
    image_at = (model.encode([images[0]], INSTRUCTION)["input_ids"][0] == model.image_token_id).nonzero().item()
    gap = (different[0, image_at + 1:] - different[1, image_at + 1:]).abs().max()
    assert gap > 1e-3


def test_forward_backward_trains_the_adapters(tiny_dir: Path, images: list[np.ndarray]) -> None:
    model = load(tiny_dir, gradient_checkpointing=True).train()
    reports = ["sinus rhythm. normal ecg.", "atrial fibrillation with rapid ventricular response."]
    loss = model(images, INSTRUCTION, reports)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    grads = {n: p.grad for n, p in model.model.named_parameters() if p.requires_grad}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert any(g.abs().sum() > 0 for n, g in grads.items() if "vision_model" in n and "lora_B" in n)
    assert all(p.grad is None for p in model.model.parameters() if not p.requires_grad)


@pytest.mark.slow
def test_learns_which_image_has_which_report(pretrained_tiny_dir: Path, images: list[np.ndarray]) -> None:
    model = load(pretrained_tiny_dir, VisionLLMConfig(lora=LoRAConfig(r=8, alpha=16, dropout=0.0))).train()
    reports = ["sinus rhythm. normal ecg.", "atrial fibrillation with rapid ventricular response."]
    batch = model.encode(images, INSTRUCTION, reports)
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
    first = None
    for _ in range(80):
        loss = model(batch)
        first = first if first is not None else loss.item()
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert loss.item() < 0.7 * first
    assert model.generate(images, INSTRUCTION, max_new_tokens=40) == reports  # the image picks the report


def test_batched_generation_equals_one_by_one(tiny_dir: Path, images: list[np.ndarray]) -> None:
    model = load(tiny_dir)
    randomise_lora(model)
    instructions = ["short:", "a much longer instruction for the second ecg:"]
    batched = model.generate(images, instructions, max_new_tokens=6)
    single = [model.generate([img], text, max_new_tokens=6)[0] for img, text in zip(images, instructions)]
    assert batched == single
    assert any(batched)


def test_saved_adapter_reloads_to_identical_generations(tiny_dir: Path, images: list[np.ndarray],
                                                          tmp_path: Path) -> None:
    model = load(tiny_dir)
    randomise_lora(model, seed=3)
    batch = model.encode(images, INSTRUCTION)
    before, logits = model.generate(batch, max_new_tokens=8), model.eval().logits(batch)
    model.save_adapter(tmp_path / "adapter")
    reloaded = MllamaReportModel.from_pretrained(tiny_dir, adapter=tmp_path / "adapter").eval()
    base = load(tiny_dir, VisionLLMConfig(lora=LoRAConfig(r=0))).eval()
    with torch.no_grad():
        assert torch.allclose(reloaded.logits(batch), logits, atol=1e-5)
        assert not torch.allclose(base.logits(batch), logits, atol=1e-3)  # the adapter matters
    assert reloaded.generate(batch, max_new_tokens=8) == before
    assert reloaded.count_trainable() == model.count_trainable()
    with pytest.raises(TypeError, match="no LoRA adapter"):
        base.save_adapter(tmp_path / "none")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16 forward/backward needs a CUDA GPU")
def test_bf16_forward_backward_on_gpu(tiny_dir: Path, images: list[np.ndarray]) -> None:
    model = load(tiny_dir, device_type="cuda", gradient_checkpointing=True).cuda().train()
    assert model.base_model.dtype == torch.bfloat16
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(images, INSTRUCTION, ["sinus rhythm.", "atrial fibrillation."])
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.trainable_parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert len(model.generate(images, INSTRUCTION, max_new_tokens=4)) == 2


# ------------------------------------------------------------------------------------------------------ preset


def test_preset_matches_the_paper() -> None:
    from jsonargparse import ArgumentParser

    preset = yaml.safe_load(PRESET.read_text())
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(VisionLLMConfig, "vision_llm")
    cfg = parser.instantiate(parser.parse_object({"vision_llm": preset["model"]["vision_llm"]})).vision_llm
    assert cfg.model == LLAMA32_VISION
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout) == (64, 128, 0.05)
    assert tuple(cfg.lora.targets) == MLLAMA_TOWERS
    assert preset["model"]["branch"] == "image" and preset["model"]["image_model"] == "mllama"
    assert preset["model"]["backbone"]["gradient_checkpointing"] is True
    assert preset["model"]["backbone"]["attn_implementation"] == "sdpa"
    assert preset["data"]["max_report_tokens"] == 128
    assert preset["optim"]["lr"] == pytest.approx(2e-4) and preset["optim"]["schedule"] == "cosine"
    assert preset["trainer"]["max_epochs"] == 3 and preset["trainer"]["precision"] == "bf16-mixed"
