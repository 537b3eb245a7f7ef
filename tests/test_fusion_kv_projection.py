"""The batched prefix k/v projection (meit.fusion.kv_projection) gives what the per-layer projections give."""

import pytest
import torch
from peft import LoraConfig, inject_adapter_in_model
from transformers import LlamaConfig, LlamaForCausalLM

from meit.encoders import build_encoder
from meit.fusion import build_fusion
from meit.fusion.backbone import LMHandles
from meit.fusion.kv_projection import fused_prefix_kv

HIDDEN, LAYERS, HEADS = 64, 3, 4


def lora_llama(kv_heads=2, targets=("q_proj", "k_proj", "v_proj", "o_proj"), dropout=0.1, bias=False, r=4):
    """A tiny frozen Llama (GQA when kv_heads < 4) with LoRA whose B is random (so LoRA changes the output; of a
    trained adapter's scale, so that fp32 rounding stays far below the 1e-6 tolerance)."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=50, hidden_size=HIDDEN, intermediate_size=96, num_hidden_layers=LAYERS,
                         num_attention_heads=HEADS, num_key_value_heads=kv_heads, attention_bias=bias,
                         max_position_embeddings=64, pad_token_id=0)
    model = LlamaForCausalLM(config)
    model.requires_grad_(False)
    if targets:
        model = inject_adapter_in_model(LoraConfig(r=r, lora_alpha=3 * r, lora_dropout=dropout,
                                                   target_modules=list(targets)), model)
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.requires_grad_(True)
                if "lora_B" in name:
                    torch.nn.init.normal_(p, std=0.05)
    return model


def per_layer(backbone: LMHandles, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [backbone.project_kv(i, x) for i in range(len(backbone.layers))]


def outputs_and_grads(backbone, x, project, seed=3):
    """Keys/values of `project` and the gradients of a loss on them w.r.t. x and every trainable weight."""
    x = x.detach().requires_grad_(True)
    torch.manual_seed(seed)
    kv = project(backbone, x)
    weights = torch.linspace(-1, 1, kv[0][0].numel()).view_as(kv[0][0])
    loss = sum((k * weights).sum() + (v * v).sum() for k, v in kv)
    params = [p for name, p in backbone.causal_lm.named_parameters()
              if p.requires_grad and ("k_proj" in name or "v_proj" in name)]
    grads = torch.autograd.grad(loss, [x, *params])
    return [t for pair in kv for t in pair], list(grads)


def assert_same(backbone, x, train):
    backbone.causal_lm.train(train)
    got = outputs_and_grads(backbone, x, LMHandles.project_kv_all)
    ref = outputs_and_grads(backbone, x, per_layer)
    # fp64: the same formula to 1e-10. fp32: keys/values to 1e-6; gradients (sums over tokens and outputs, so
    # rounding grows with them) to 1e-5 of each tensor's largest magnitude.
    for i, (a, b) in enumerate(zip(got[0] + got[1], ref[0] + ref[1])):
        if x.dtype == torch.float64:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
        elif i < len(got[0]):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
        else:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max()))


@pytest.mark.parametrize("kv_heads", [1, 2, 4])
@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_projection_equals_per_layer_with_lora_and_gqa(kv_heads, train, dtype):
    """Values and gradients (tokens, LoRA A and B) agree; in train mode the same LoRA dropout masks are drawn."""
    backbone = LMHandles.of(lora_llama(kv_heads).to(dtype))
    x = torch.randn(2, 5, HIDDEN, dtype=dtype)
    assert fused_prefix_kv([backbone.attention(i) for i in range(LAYERS)], x, backbone.head_dim) is not None
    assert_same(backbone, x, train)
    k, v = backbone.project_kv_all(x)[0]
    assert tuple(k.shape) == tuple(v.shape) == (2, kv_heads, 5, HIDDEN // HEADS)


@pytest.mark.parametrize("case", [dict(targets=()), dict(bias=True), dict(dropout=0.0),
                                  dict(targets=("q_proj", "v_proj"))])
def test_fused_projection_without_lora_with_bias_or_partial_lora(case):
    """No LoRA, attention biases, no dropout, LoRA on v only (that case falls back to the per-layer path)."""
    backbone = LMHandles.of(lora_llama(**case))
    x = torch.randn(3, 2, HIDDEN)
    for train in (False, True):
        assert_same(backbone, x, train)


def test_hooked_projection_still_runs_its_hooks():
    """A module with hooks (e.g. DeepSpeed ZeRO-3's parameter gathering) is called, not bypassed."""
    backbone = LMHandles.of(lora_llama())
    calls = []
    backbone.attention(1).v_proj.register_forward_pre_hook(lambda module, args: calls.append(module))
    x = torch.randn(2, 3, HIDDEN)
    assert fused_prefix_kv([backbone.attention(i) for i in range(LAYERS)], x, backbone.head_dim) is None
    assert_same(backbone, x, train=False)
    assert calls


def test_prefix_kv_training_loss_and_grads_match_the_per_layer_path(monkeypatch):
    """The whole fusion (encoder, projector, LoRA dropout in train mode) gives the per-layer path's loss/grads."""
    torch.manual_seed(1)
    net = build_fusion("prefix_kv", lora_llama(targets=("q_proj", "k_proj", "v_proj", "o_proj", "down_proj")),
                       build_encoder("resnet_small_1d", n_tokens=3)).train()
    ecg, ids = torch.randn(2, 12, 256), torch.randint(1, 50, (2, 7))
    labels = ids.clone()
    labels[:, :2] = -100

    def run():
        torch.manual_seed(7)
        loss, _ = net(ecg, ids, torch.ones_like(ids), labels)
        params = [p for p in net.parameters() if p.requires_grad]
        return [loss, *torch.autograd.grad(loss, params)]

    fused = run()
    monkeypatch.setattr(LMHandles, "project_kv_all", per_layer)
    for a, b in zip(fused, run()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
