"""The LightningModule and the collate function: schedule, prompts, trainable state, conditioning on the ECG."""

from __future__ import annotations

import pytest
import torch

from meit.config import BackboneConfig, DataConfig, EmbeddedLMConfig, ModelConfig, OptimConfig
from meit.fusion.splice import IGNORE_INDEX
from meit.llm import backbone as bb
from meit.llm.lora import LoRAConfig
from meit.tasks.base import linear_warmup_decay
from meit.tasks.datamodule import PromptCollator
from meit.tasks.fusion import FusionTask

REPORTS = ["sinus rhythm. normal ecg.", "atrial fibrillation. left bundle branch block. st depression."]
TINY_LM = EmbeddedLMConfig(vocab_size=400, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                           intermediate_size=64, max_position_embeddings=64, pretrain_steps=60, pretrain_batch_size=4,
                           pretrain_lr=0.02)
DATA = DataConfig(max_report_tokens=24)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[ModelConfig, dict]:
    cfg = ModelConfig(backbone=BackboneConfig(embedded=TINY_LM), lora=LoRAConfig(r=8, alpha=16, dropout=0.0),
                      encoder_kwargs={"widths": [8, 8, 16, 16]})
    return cfg, bb.resolve_backbone(cfg, tmp_path_factory.mktemp("cache"), REPORTS * 4, DATA.prompt.texts())


def make_module(reference, **overrides) -> FusionTask:
    cfg, ref = reference
    cfg = ModelConfig(**{**cfg.__dict__, **overrides})
    torch.manual_seed(0)
    module = FusionTask(cfg, OptimConfig(lr=3e-3), max_new_tokens=24)
    module.build(bb.load_backbone(ref, cfg.backbone))
    return module


def items(ecgs: torch.Tensor) -> list[dict]:
    return [{"id": str(i), "ecg": e, "report": REPORTS[i], "labels": ["NORM"]} for i, e in enumerate(ecgs)]


def test_linear_warmup_then_linear_decay():
    f = linear_warmup_decay(total_steps=100, warmup_ratio=0.03)
    assert [round(f(s), 3) for s in (0, 1, 2, 3)] == [0.333, 0.667, 1.0, 1.0]
    assert f(50) == pytest.approx(50 / 97) and f(99) == pytest.approx(1 / 97) and f(100) == 0.0


def test_collate_masks_the_prompt_and_samples_instructions_only_in_training(reference):
    tok = make_module(reference).tokenizer
    ecg = torch.randn(2, 12, 100)
    batch = PromptCollator(tok, DATA)(items(ecg))
    for row in range(2):
        labelled = batch["labels"][row][batch["labels"][row] != IGNORE_INDEX].tolist()
        assert labelled[-1] == tok.eos_token_id
        assert tok.decode(labelled[:-1]) == REPORTS[row]
        prompt = batch["input_ids"][row][batch["labels"][row] == IGNORE_INDEX]
        prompt = prompt[batch["attention_mask"][row][: len(prompt)] == 1]
        expected = DATA.prompt.template.format(instruction=DATA.prompt.instruction)
        assert tok.decode(prompt, skip_special_tokens=True) == expected
    generate = PromptCollator(tok, DATA, generate=True)(items(ecg))
    assert "labels" not in generate and bool(generate["attention_mask"][:, -1].all())  # left padded
    sampled = {PromptCollator(tok, DATA, train=True).prompt() for _ in range(200)}
    assert len(sampled) == 1 + len(DATA.prompt.paraphrases)
    assert {PromptCollator(tok, DATA).prompt() for _ in range(20)} == {DATA.prompt.instruction + "\n"}


def test_reports_are_truncated_to_max_length(reference):
    tok = make_module(reference).tokenizer
    short = DataConfig(max_report_tokens=4)
    batch = PromptCollator(tok, short)(items(torch.randn(2, 12, 100)))
    assert int((batch["labels"] != IGNORE_INDEX).sum(1).max()) <= short.max_report_tokens


def test_trainable_state_holds_no_backbone_weight(reference):
    module = make_module(reference)
    state = module.trainable_state_dict()
    assert any("lora_A" in k for k in state) and any(k.startswith("encoder.") for k in state)
    assert any(k.startswith("projector.") for k in state)
    assert any(k.endswith("running_mean") for k in state)  # BatchNorm statistics travel with the weights
    backbone_keys = [k for k in module.net.state_dict() if k.startswith("llm.") and "lora_" not in k]
    assert backbone_keys and not set(backbone_keys) & set(state)
    n_params = sum(v.numel() for k, v in state.items() if k in dict(module.net.named_parameters()))
    assert n_params == module.count_trainable()
    with pytest.raises(KeyError, match="missing"):
        module.load_trainable_state_dict({k: v for k, v in state.items() if "lora_A" not in k})


def overfit(module: FusionTask, ecg: torch.Tensor, steps: int) -> list[float]:
    # 8 copies of each record: BatchNorm's running statistics then match its batch statistics (n-1 vs n).
    batch = PromptCollator(module.tokenizer, DATA)(items(ecg) * 8)
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=3e-3)
    module.train()
    losses = []
    for _ in range(steps):
        loss = module(batch)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


def generate(module: FusionTask, ecg: torch.Tensor) -> list[str]:
    batch = PromptCollator(module.tokenizer, DATA, generate=True)(items(ecg))
    module.eval()
    return module.generate_reports(batch)


@pytest.mark.slow
def test_swapping_ecgs_swaps_the_generated_reports(reference):
    torch.manual_seed(1)
    ecg = torch.randn(2, 12, 400)
    module = make_module(reference)
    losses = overfit(module, ecg, steps=120)
    assert losses[-1] < 0.1 * losses[0]
    assert generate(module, ecg) == REPORTS
    assert generate(module, ecg.flip(0)) == REPORTS[::-1]


@pytest.mark.slow
def test_zero_ecg_baseline_cannot_tell_records_apart(reference):
    torch.manual_seed(1)
    ecg = torch.randn(2, 12, 400)
    module = make_module(reference, ecg_input="zero")
    overfit(module, ecg, steps=60)
    first, second = generate(module, ecg)
    assert first == second  # the same prompt and an all-zero ECG: one report for every record
