"""input_prefix (LLaVA-style) and gated_xattn (Flamingo-style) fusions."""

import pytest
import torch
from test_fusion import EOS, PAD, VOCAB, batch, reference_loss, tiny_llm, tiny_model

from meit.fusion.splice import splice


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_gated_xattn_at_init_equals_the_text_only_lm(family):
    model = tiny_model("gated_xattn", family=family)
    text_only = tiny_llm(family)
    ecg, b = batch()
    with torch.no_grad():
        fused = model.logits(ecg, b.input_ids, b.attention_mask)
        plain = text_only(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
    keep = b.attention_mask.bool()
    torch.testing.assert_close(fused[keep], plain[keep])


def test_gated_xattn_blocks_every_k_layers_and_gate_gradients():
    model = tiny_model("gated_xattn", every=2).train()
    assert model.layer_ids == [0] and len(model.xattn) == 1
    ecg, b = batch()
    loss, _ = model(ecg, b.input_ids, b.attention_mask, b.labels)
    loss.backward()
    block = model.xattn[0]
    assert block.attn_gate.grad.abs() > 0 and block.ff_gate.grad.abs() > 0
    torch.testing.assert_close(loss, reference_loss(model.eval(), ecg, b))


def test_gated_xattn_remove_hooks_restores_the_lm():
    model = tiny_model("gated_xattn", gate_init=0.5)
    ecg, b = batch()
    with torch.no_grad():
        before = model.logits(ecg, b.input_ids, b.attention_mask)
        model.remove_hooks()
        after = model.logits(ecg, b.input_ids, b.attention_mask)
        plain = tiny_llm()(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
    assert (before - after).abs().max() > 1e-4
    torch.testing.assert_close(after, plain)


def test_input_prefix_prepended_slots_equal_spliced_slots():
    model = tiny_model("input_prefix", n_tokens=3)
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, VOCAB, (k,), generator=g).tolist() for k in (2, 4)]
    reports = [torch.randint(3, VOCAB, (k,), generator=g).tolist() for k in (5, 2)]
    ecg = torch.randn(2, 12, 1000, generator=g)
    text = splice(prompts, reports, pad_token_id=PAD, eos_token_id=EOS, padding_side="left")
    slots = splice(prompts, reports, pad_token_id=PAD, eos_token_id=EOS, padding_side="left", n_ecg_tokens=3)
    assert slots.input_ids.shape[1] == text.input_ids.shape[1] + 3
    assert slots.ecg_mask.sum(1).tolist() == [3, 3]
    with torch.no_grad():
        a, na = model(ecg, text.input_ids, text.attention_mask, text.labels)
        c, nc = model(ecg, slots.input_ids, slots.attention_mask, slots.labels, ecg_mask=slots.ecg_mask)
    assert na == nc == int((text.labels != -100).sum())
    torch.testing.assert_close(a, c)
    logits = model.logits(ecg, text.input_ids, text.attention_mask)
    assert tuple(logits.shape) == (2, text.input_ids.shape[1], VOCAB)


def test_input_prefix_generation_with_spliced_slots():
    model = tiny_model("input_prefix", n_tokens=2)
    prompts = [[5, 6, 7], [8]]
    ecg = torch.randn(2, 12, 1000)
    text = splice(prompts, None, pad_token_id=PAD, eos_token_id=EOS, padding_side="left")
    slots = splice(prompts, None, pad_token_id=PAD, eos_token_id=EOS, padding_side="left", n_ecg_tokens=2)
    kw = dict(max_new_tokens=5, eos_token_id=None, pad_token_id=PAD)
    assert model.generate(ecg, text.input_ids, text.attention_mask, **kw) == model.generate(
        ecg, slots.input_ids, slots.attention_mask, ecg_mask=slots.ecg_mask, **kw
    )


def test_slot_count_must_match_the_encoder_and_other_fusions_refuse_slots():
    ecg, b = batch()
    ecg_mask = torch.zeros_like(b.input_ids, dtype=torch.bool)
    ecg_mask[:, 0] = True
    with pytest.raises(ValueError, match="must mark 2 ECG slots"):
        tiny_model("input_prefix")(ecg, b.input_ids, b.attention_mask, b.labels, ecg_mask=ecg_mask)
    for fusion in ("prefix_kv", "gated_xattn"):
        with pytest.raises(ValueError, match="takes no ECG slots"):
            tiny_model(fusion)(ecg, b.input_ids, b.attention_mask, b.labels, ecg_mask=ecg_mask)
