"""`python -m meit.bench`: suite wiring, JSON / markdown structure (not timings), and the training FLOP formula."""

from __future__ import annotations

import json

import pytest

from meit import bench
from meit.benchmarks import TINY, analytic_flops, build_net, counted_flops, make_batch, step_fn

STAT_KEYS = {"median", "min", "max", "n"}


def _is_stat(value) -> bool:
    return isinstance(value, dict) and set(value) == STAT_KEYS and value["min"] <= value["median"] <= value["max"]


def test_every_suite_points_at_a_function():
    import importlib

    assert set(bench.SUITES) == {"data", "render", "train", "generate", "eval", "grounding", "smollm2"}
    for module, name in bench.SUITES.values():
        assert callable(getattr(importlib.import_module(module), name))


@pytest.mark.parametrize("fusion, tokens, text_only", [("prefix_kv", 1, False), ("prefix_kv", 4, False),
                                                       ("input_prefix", 4, False), ("prefix_kv", 1, True)])
def test_analytic_flops_bound_the_counted_flops(fusion, tokens, text_only):
    """The formula (frozen LM: activation grads everywhere, weight grads for LoRA/encoder only) is an upper bound
    within 20 % of what torch's FlopCounterMode counts on the same step."""
    net = build_net(TINY, fusion, ecg_tokens=tokens)
    batch = make_batch(TINY)
    analytic = analytic_flops(net, batch, text_only=text_only)
    counted = counted_flops(step_fn(net, batch, text_only=text_only))
    assert counted <= analytic["total"] <= 1.2 * counted
    if text_only:  # the LM alone: frozen weights get no weight gradient, so backward < 2 x forward
        assert analytic["backward"] < 2 * analytic["forward"]


def test_tiny_train_and_generate_suites_have_the_documented_figures():
    from meit.benchmarks import generate_suite, train_suite

    train = train_suite(repeats=1, peak_gflops=100.0, tiny=True)
    for key in ("train_samples_per_s", "achieved_gflops", "fraction_of_fp32_peak", "fwd_bwd_s_text_only",
                "fwd_bwd_s_prefix_kv_4tok", "fwd_bwd_s_input_prefix_4tok", "train_step_s",
                "wide_train_step_s", "wide_train_samples_per_s", "wide_achieved_gflops", "wide_fraction_of_fp32_peak"):
        assert _is_stat(train[key]), key
    assert "d=64" in train["wide_shape"] and "8 ECG tokens" in train["wide_shape"]  # tiny stand-in for d=512
    wide_ratio = train["wide_fraction_of_fp32_peak"]["median"] / train["wide_achieved_gflops"]["median"]
    assert wide_ratio == pytest.approx(1 / train["fp32_peak_gflops_used"])
    for tokens in ("4tok", "1tok"):  # the tiny shape's ecg_tokens, and MEIT's single pooled token
        for name in ("text_plus_encoder", "prefix_kv", "input_prefix", "input_prefix_text_plus_encoder"):
            assert _is_stat(train[f"fwd_bwd_s_{name}_{tokens}"]), (name, tokens)
        for ratio in ("encoder_over_text_only", "prefix_kv_over_text_only", "prefix_kv_over_text_plus_encoder",
                      "input_prefix_over_text_only", "input_prefix_over_text_plus_encoder",
                      "prefix_kv_over_input_prefix"):
            stat = train[f"{ratio}_{tokens}"]
            assert _is_stat(stat) and stat["median"] > 0, (ratio, tokens)
    assert train["flops_per_step_counted"] <= train["flops_per_step_analytic"]
    assert train["fp32_peak_gflops_used"] >= 100.0
    ratio = train["fraction_of_fp32_peak"]["median"] / train["achieved_gflops"]["median"]
    assert ratio == pytest.approx(1 / train["fp32_peak_gflops_used"])
    generate = generate_suite(repeats=1, peak_gflops=100.0, tiny=True)
    assert _is_stat(generate["reports_per_s_prefix_kv"]) and _is_stat(generate["reports_per_s_text_only"])
    assert generate["new_tokens"] == TINY.gen_tokens


def test_interleaved_timing_rotates_the_order_and_pairs_rounds(monkeypatch):
    """Every round runs each variant once, starting one later each round; ratios pair times of the same round."""
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    clock = iter(range(100))
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(clock))
    times = bench.interleaved_timed(fns, repeats=3, warmup=1)
    assert calls == ["a", "b", "c", "a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert all(len(values) == 3 for values in times.values())
    slow = {"x": [2.0, 4.0, 9.0], "base": [1.0, 2.0, 3.0]}  # load doubled round 2: the paired ratio ignores it
    assert bench.ratio_stat(slow, "x", "base") == {"median": 2.0, "min": 2.0, "max": 3.0, "n": 3}


def test_tiny_grounding_suite_times_measuring_and_checking_at_both_rates():
    from meit.benchmarks import grounding_suite

    figures = grounding_suite(repeats=1, peak_gflops=100.0, tiny=True)
    assert figures["n_records"] == 4
    for fs in (100, 500):
        stat = figures[f"ms_per_record_{fs}hz"]
        assert _is_stat(stat) and 0 < stat["median"] < 10_000  # milliseconds, not seconds


def test_wide_shape_is_the_speed_targets_hidden_512_config():
    from meit.benchmarks import WIDE, WIDE_ECG_TOKENS

    assert (WIDE.hidden, WIDE.layers, WIDE.heads, WIDE.intermediate, WIDE.vocab, WIDE.lora_r) == (512, 4, 8, 1376,
                                                                                                   1024, 64)
    assert (WIDE.batch, WIDE.prompt_tokens + WIDE.report_tokens, WIDE_ECG_TOKENS) == (32, 64, 8)


def test_smollm2_suite_skips_in_tiny_mode_and_without_the_package(monkeypatch):
    from meit.benchmarks import smollm2_suite
    from meit.llm import backbone

    tiny = smollm2_suite(repeats=1, peak_gflops=100.0, tiny=True)
    assert set(tiny) == {"skipped"} and "tiny" in tiny["skipped"]

    def missing():
        raise FileNotFoundError("no package")

    monkeypatch.setattr(backbone, "smollm2_gguf", missing)
    absent = smollm2_suite(repeats=1, peak_gflops=100.0, tiny=False)
    assert set(absent) == {"skipped"} and backbone.SMOLLM2_INSTALL in absent["skipped"]


@pytest.mark.slow
def test_tiny_bench_cli_writes_json_and_appends_markdown(tmp_path):
    out, md = tmp_path / "bench.json", tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n")
    bench.main(["all", "--tiny", "--repeats", "1", "--out", str(out), "--benchmarks-md", str(md)])
    results = json.loads(out.read_text())
    assert set(bench.SUITES) <= set(results)
    assert _is_stat(results["fp32_matmul_peak_gflops"]) and results["peak_rss_mb"] > 0
    assert results["command"].startswith("python -m meit.bench") and "cores" in results["machine"]
    assert _is_stat(results["data"]["records_per_s_1_worker"])
    assert _is_stat(results["render"]["images_per_s_clean"]) and _is_stat(results["render"]["images_per_s_artefacts"])
    assert _is_stat(results["eval"]["evaluate_records_s"]) and results["eval"]["n_pairs"] == 50
    assert _is_stat(results["eval"]["bertscore_pairs_per_s"])
    assert _is_stat(results["train"]["fraction_of_fp32_peak"])
    assert _is_stat(results["generate"]["reports_per_s_prefix_kv"])
    assert set(results["smollm2"]) == {"skipped"}
    text = md.read_text()
    assert text.startswith("# Benchmarks\n") and "Machine: " in text
    for name in bench.SUITES:
        assert f"### {name}" in text
    assert "| train_samples_per_s |" in text and "(n=1)" in text
    assert "| wide_fraction_of_fp32_peak |" in text and "| skipped |" in text
