"""prefix_kv (MEIT) fusion on tiny Llama / Mistral / GPT-2 configs, plus the shared loss and generation paths."""

import dataclasses
import warnings
from types import SimpleNamespace

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

from meit.encoders import build_encoder
from meit.fusion import build_fusion, fusion_names
from meit.fusion.backbone import cache_keyword_of, lora_target_modules
from meit.fusion.splice import splice
from meit.llm.mllama import enable_checkpointing

VOCAB, PAD, EOS = 100, 0, 1


def tiny_llm(family="llama", attn="eager", kv_heads=2, seed=0):
    """A tiny randomly initialised causal LM (hidden 64, 2 layers)."""
    torch.manual_seed(seed)
    common = dict(vocab_size=VOCAB, pad_token_id=PAD, eos_token_id=EOS, bos_token_id=EOS)
    if family == "gpt2":
        config = GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=128, **common)
        model = GPT2LMHeadModel(config)
    else:
        cls_cfg, cls = (LlamaConfig, LlamaForCausalLM) if family == "llama" else (MistralConfig, MistralForCausalLM)
        config = cls_cfg(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=kv_heads,
            max_position_embeddings=128,
            **common,
        )
        model = cls(config)
    model.config._attn_implementation = attn
    return model.eval()


def tiny_model(fusion="prefix_kv", family="llama", attn="eager", kv_heads=2, lora=False, seed=0, **kwargs):
    """A fusion around a tiny LM (optionally with LoRA, base frozen) and the small ResNet encoder."""
    llm = tiny_llm(family, attn, kv_heads, seed)
    for p in llm.parameters():
        p.requires_grad_(False)
    if lora:
        llm = get_peft_model(llm, LoraConfig(r=4, lora_alpha=8, target_modules=lora_target_modules(llm)))
    torch.manual_seed(seed + 1)
    encoder = build_encoder("resnet_small_1d", n_tokens=kwargs.pop("n_tokens", 2))
    return build_fusion(fusion, llm, encoder, **kwargs).eval()


def batch(padding_side="right", n=3, seed=0):
    """ECGs + spliced prompt/report ids of different lengths."""
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(3, VOCAB, (3 + i,), generator=g).tolist() for i in range(n)]
    reports = [torch.randint(3, VOCAB, (6 - i,), generator=g).tolist() for i in range(n)]
    spliced = splice(prompts, reports, pad_token_id=PAD, eos_token_id=EOS, padding_side=padding_side)
    return torch.randn(n, 12, 1000, generator=g), spliced


def reference_loss(model, ecg, b):
    """Loss from the full (B, L, vocab) logits, the slow way."""
    logits = model.logits(ecg, b.input_ids, b.attention_mask)
    return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), b.labels[:, 1:].reshape(-1))


def test_fusions_registered():
    assert {"prefix_kv", "input_prefix", "gated_xattn"} <= set(fusion_names())
    with pytest.raises(ValueError, match="unknown fusion: nope; choose from"):
        build_fusion("nope", tiny_llm(), build_encoder("resnet_small_1d"))


@pytest.mark.parametrize("family", ["llama", "mistral", "gpt2"])
def test_loss_uses_report_positions_only(family):
    model = tiny_model(family=family)
    ecg, b = batch()
    seen = []
    model.backbone.lm_head.register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    loss, n_tokens = model(ecg, b.input_ids, b.attention_mask, b.labels)
    assert n_tokens == int((b.labels != -100).sum()) == 18
    assert seen == [torch.Size([n_tokens, 64])]
    torch.testing.assert_close(loss, reference_loss(model, ecg, b))


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_backward_reaches_encoder_projector_and_lora_only(family):
    model = tiny_model(family=family, lora=True).train()
    ecg, b = batch()
    loss, _ = model(ecg, b.input_ids, b.attention_mask, b.labels)
    assert torch.isfinite(loss)
    loss.backward()
    named = dict(model.named_parameters())
    for prefix in ("encoder.", "projector."):
        grads = [p.grad for n, p in named.items() if n.startswith(prefix) and p.requires_grad]
        assert grads and all(g is not None for g in grads)
        assert sum(g.abs().sum() for g in grads) > 0
    for proj in lora_target_modules(model.llm):
        lora_b = [p for n, p in named.items() if proj in n and "lora_B" in n]
        assert lora_b and all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora_b)
    frozen = [p for n, p in named.items() if "lora_" not in n and n.startswith("llm.")]
    assert frozen and all(not p.requires_grad and p.grad is None for p in frozen)


@pytest.mark.parametrize("fusion", ["prefix_kv", "input_prefix", "gated_xattn"])
def test_output_depends_on_the_ecg(fusion):
    model = tiny_model(fusion, gate_init=0.5) if fusion == "gated_xattn" else tiny_model(fusion)
    ecg, b = batch(n=2)
    ids = b.input_ids[:1].expand(2, -1)
    mask = b.attention_mask[:1].expand(2, -1)
    with torch.no_grad():
        logits = model.logits(ecg, ids, mask)
        swapped = model.logits(ecg.flip(0), ids, mask)
    assert (logits[0] - logits[1]).abs().max() > 1e-4
    torch.testing.assert_close(swapped, logits.flip(0))


def test_zero_ecg_baseline_is_finite_and_ignores_the_signal():
    model = tiny_model(ecg_input="zero").train()
    ecg, b = batch()
    loss, _ = model(ecg, b.input_ids, b.attention_mask, b.labels)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.projector.parameters() if p.grad is not None)
    model.eval()
    with torch.no_grad():
        a = model.logits(ecg, b.input_ids, b.attention_mask)
        c = model.logits(torch.randn_like(ecg), b.input_ids, b.attention_mask)
    torch.testing.assert_close(a, c)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_eager_and_sdpa_give_the_same_loss(family):
    ecg, b = batch(padding_side="left")
    losses = []
    for attn in ("eager", "sdpa"):
        model = tiny_model(family=family, attn=attn)
        with torch.no_grad():
            losses.append(model(ecg, b.input_ids, b.attention_mask, b.labels)[0])
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kv_heads", [1, 2, 4])
def test_grouped_query_attention(kv_heads):
    model = tiny_model(kv_heads=kv_heads)
    ecg, b = batch()
    cache = model.prefix_cache(ecg, grow=False)
    assert tuple(cache.layers[0].keys.shape) == (3, kv_heads, 2, 16)
    loss, _ = model(ecg, b.input_ids, b.attention_mask, b.labels)
    torch.testing.assert_close(loss, reference_loss(model, ecg, b))


@pytest.mark.parametrize("fusion", ["prefix_kv", "input_prefix", "gated_xattn"])
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_padding_side_does_not_change_per_sample_loss(fusion, family):
    model = tiny_model(fusion, family=family, attn="sdpa")
    ecg, right = batch("right")
    _, left = batch("left")
    with torch.no_grad():
        for i in range(3):
            row = slice(i, i + 1)
            keep = right.attention_mask[i].bool()
            alone = model(
                ecg[row], right.input_ids[row][:, keep], right.attention_mask[row][:, keep], right.labels[row][:, keep]
            )[0]
            r = model(ecg[row], right.input_ids[row], right.attention_mask[row], right.labels[row])[0]
            lft = model(ecg[row], left.input_ids[row], left.attention_mask[row], left.labels[row])[0]
            torch.testing.assert_close(r, alone, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(lft, alone, rtol=1e-5, atol=1e-5)
        whole_right = model(ecg, right.input_ids, right.attention_mask, right.labels)[0]
        whole_left = model(ecg, left.input_ids, left.attention_mask, left.labels)[0]
    torch.testing.assert_close(whole_right, whole_left, rtol=1e-5, atol=1e-5)


def greedy_without_cache(model, ecg, ids, mask, steps):
    """Greedy decoding that recomputes the whole sequence at every step."""
    out = []
    for _ in range(steps):
        with torch.no_grad():
            token = model.logits(ecg, ids, mask)[:, -1].argmax(-1)
        out.append(token)
        ids = torch.cat([ids, token[:, None]], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    return torch.stack(out, dim=1).tolist()


@pytest.mark.parametrize("fusion", ["prefix_kv", "input_prefix", "gated_xattn"])
@pytest.mark.parametrize(
    ("family", "attn"), [("llama", "eager"), ("llama", "sdpa"), ("mistral", "sdpa"), ("gpt2", "eager")]
)
def test_cached_generation_equals_recomputation(fusion, family, attn):
    kwargs = {"gate_init": 0.5} if fusion == "gated_xattn" else {}
    model = tiny_model(fusion, family=family, attn=attn, **kwargs)
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, VOCAB, (k,), generator=g).tolist() for k in (2, 5, 4)]
    b = splice(prompts, None, pad_token_id=PAD, eos_token_id=EOS, padding_side="left")
    ecg = torch.randn(3, 12, 1000, generator=g)
    cached = model.generate(ecg, b.input_ids, b.attention_mask, max_new_tokens=7, eos_token_id=None, pad_token_id=PAD)
    assert cached == greedy_without_cache(model, ecg, b.input_ids, b.attention_mask, 7)


def test_generation_stops_at_eos_and_pads_finished_rows():
    model = tiny_model()
    ecg, b = batch(padding_side="left")
    prompt = b.input_ids[:, :-3]
    mask = b.attention_mask[:, :-3]
    free = model.generate(ecg, prompt, mask, max_new_tokens=6, eos_token_id=None, pad_token_id=PAD)
    stop = free[0][2]
    stopped = model.generate(ecg, prompt, mask, max_new_tokens=6, eos_token_id=stop, pad_token_id=PAD)
    for full, cut in zip(free, stopped):
        expected = full[: full.index(stop)] if stop in full else full
        assert cut == expected
    assert stopped[0] == free[0][:2]


def test_generation_needs_left_padding():
    model = tiny_model()
    b = splice([[5, 6, 7], [8]], None, pad_token_id=PAD, eos_token_id=EOS, padding_side="right")
    ecg = torch.randn(2, 12, 1000)
    with pytest.raises(ValueError, match="left-padded"):
        model.generate(ecg, b.input_ids, b.attention_mask, max_new_tokens=2, eos_token_id=EOS, pad_token_id=PAD)


def test_ecg_keys_values_are_computed_once_per_generate_call():
    model = tiny_model()
    calls = []
    model.projector.register_forward_hook(lambda *a: calls.append(1))
    ecg, b = batch(padding_side="left")
    model.generate(ecg, b.input_ids, b.attention_mask, max_new_tokens=5, eos_token_id=None, pad_token_id=PAD)
    assert len(calls) == 1


def test_gradient_checkpointing_gives_the_same_gradients():
    ecg, b = batch()
    grads = []
    for checkpointing in (False, True):
        model = tiny_model(lora=True).train()
        if checkpointing:
            enable_checkpointing(model.llm)  # transformers' name for it changed within 5.x
        calls, mlp = [], model.backbone.layers[0].mlp
        mlp.forward = lambda x, f=mlp.forward: calls.append(1) or f(x)  # counts the recompute too (hooks do not)
        loss, _ = model(ecg, b.input_ids, b.attention_mask, b.labels)
        loss.backward()
        assert len(calls) == 1 + checkpointing
        grads.append([p.grad.clone() for p in model.parameters() if p.requires_grad])
    for a, c in zip(*grads):
        torch.testing.assert_close(a, c)


def test_unsupported_model_type_is_named():
    from transformers import OPTConfig, OPTForCausalLM

    opt = OPTForCausalLM(
        OPTConfig(
            vocab_size=VOCAB,
            hidden_size=16,
            num_hidden_layers=1,
            ffn_dim=32,
            num_attention_heads=2,
            word_embed_proj_dim=16,
        )
    )
    with pytest.raises(ValueError, match="unsupported model type for ECG fusion: opt"):
        build_fusion("prefix_kv", opt, build_encoder("resnet_small_1d"))
    with pytest.raises(ValueError, match="opt"):
        lora_target_modules(opt)


def test_lora_targets_per_family():
    assert lora_target_modules(tiny_llm("mistral")) == [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ]
    assert lora_target_modules(tiny_llm("gpt2")) == ["c_attn", "c_proj", "c_fc"]


@pytest.mark.parametrize("projector", ["meit", "linear", "mlp"])
def test_projectors(projector):
    model = tiny_model(projector=projector)
    tokens = model.encode_ecg(torch.randn(2, 12, 1000))
    assert tuple(tokens.shape) == (2, 2, 64)
    if projector == "meit":
        head = tokens[..., :16]
        torch.testing.assert_close(tokens, head.repeat(1, 1, 4))
        torch.testing.assert_close(head.norm(dim=-1), torch.ones(2, 2), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("fusion", ["prefix_kv", "gated_xattn"])
def test_beam_search_with_all_tokens_as_beams_is_exact_over_two_steps(fusion):
    model = tiny_model(fusion, gate_init=0.5) if fusion == "gated_xattn" else tiny_model(fusion)
    b = splice([[5, 6, 7], [8]], None, pad_token_id=PAD, eos_token_id=EOS, padding_side="left")
    ecg = torch.randn(2, 12, 1000, generator=torch.Generator().manual_seed(3))
    beams = model.generate(ecg, b.input_ids, b.attention_mask, 2, eos_token_id=None, pad_token_id=PAD, num_beams=VOCAB)
    for i in range(2):
        ids = torch.cat([b.input_ids[i : i + 1].expand(VOCAB, -1), torch.arange(VOCAB)[:, None]], dim=1)
        mask = torch.ones_like(ids)
        mask[:, : int((b.attention_mask[i] == 0).sum())] = 0
        with torch.no_grad():
            logp = model.logits(ecg[i : i + 1].expand(VOCAB, -1, -1), ids, mask).log_softmax(-1)
        first, second = logp[0, -2], logp[:, -1].max(-1)
        best = int((first + second.values).argmax())
        assert beams[i] == [best, int(second.indices[best])]


def test_beam_search_finishes_on_eos():
    model = tiny_model()
    ecg, b = batch(padding_side="left")
    prompt, mask = b.input_ids[:, :-3], b.attention_mask[:, :-3]
    greedy = model.generate(ecg, prompt, mask, 6, eos_token_id=None, pad_token_id=PAD)
    one_beam = model.generate(ecg, prompt, mask, 6, eos_token_id=None, pad_token_id=PAD, num_beams=1)
    assert greedy == one_beam
    beams = model.generate(ecg, prompt, mask, 6, eos_token_id=greedy[0][0], pad_token_id=PAD, num_beams=3)
    assert len(beams) == 3 and all(len(row) <= 6 and greedy[0][0] not in row for row in beams)


class OldSpellingDecoder(torch.nn.Module):
    """A decoder with the pre-5.2x interface: `past_key_values=` in, `.past_key_values` out."""

    def __init__(self, decoder):
        super().__init__()
        self.inner = decoder

    def get_input_embeddings(self):
        return self.inner.get_input_embeddings()

    def forward(self, inputs_embeds, attention_mask, position_ids, past_key_values=None, use_cache=None):
        out = self.inner(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
                         use_cache=use_cache, **{cache_keyword_of(self.inner): past_key_values})
        return SimpleNamespace(last_hidden_state=out.last_hidden_state,
                               past_key_values=getattr(out, cache_keyword_of(self.inner)))


@pytest.mark.parametrize("family", ["llama", "mistral", "gpt2"])
def test_prefix_kv_passes_the_cache_without_deprecated_keywords(family):
    # transformers 5.24 deprecates `past_key_values=` (gone in 5.40, where prefix_kv then broke): no warning allowed.
    model = tiny_model(family=family)
    ecg, b = batch()
    gen = splice([[5, 6, 7], [8]], None, pad_token_id=PAD, eos_token_id=EOS, padding_side="left")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        model(ecg, b.input_ids, b.attention_mask, b.labels)
        model.generate(ecg[:2], gen.input_ids, gen.attention_mask, max_new_tokens=3, eos_token_id=None,
                       pad_token_id=PAD)


def test_prefix_kv_works_with_the_old_cache_keyword():
    model = tiny_model()
    ecg, b = batch(padding_side="left")
    new = model.generate(ecg, b.input_ids, b.attention_mask, max_new_tokens=5, eos_token_id=None, pad_token_id=PAD)
    old_decoder = OldSpellingDecoder(model.backbone.decoder)
    keyword = cache_keyword_of(old_decoder)
    model.backbone = dataclasses.replace(model.backbone, decoder=old_decoder, cache_keyword=keyword)
    assert model.backbone.cache_keyword == "past_key_values"
    old = model.generate(ecg, b.input_ids, b.attention_mask, max_new_tokens=5, eos_token_id=None, pad_token_id=PAD)
    assert old == new
    loss, _ = model(ecg, b.input_ids, b.attention_mask, b.labels)
    assert torch.isfinite(loss)
