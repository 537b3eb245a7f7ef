"""BERTScore: the batched, threaded embedding path gives exactly what bert-score's own ``score`` gives."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from bert_score import BERTScorer

from meit.eval.bench import synthetic_pairs
from meit.eval.bertscore import (
    DEFAULT_NUM_LAYERS,
    _token_batches,
    default_model_path,
    embed_sentences,
    get_scorer,
    score_pairs,
)

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def scorer() -> BERTScorer:
    return get_scorer(None)[0]


def _fixture_reports() -> list[str]:
    """The real report strings of the fixtures (PTB-XL German, MIMIC-IV-ECG machine statements)."""
    with open(FIXTURES / "ptbxl-mini" / "ptbxl_database.csv") as f:
        reports = [row["report"] for row in csv.DictReader(f)]
    with open(FIXTURES / "mimic-iv-ecg-meta" / "machine_measurements.csv") as f:
        for row in csv.DictReader(f):
            reports.append(". ".join(v for k, v in row.items() if k.startswith("report_") and v))
    return reports


def _pairs() -> tuple[list[str], list[str]]:
    hyps, refs = synthetic_pairs(90, seed=7)
    real = _fixture_reports()
    long = "sinus rhythm with first degree av block, left axis deviation and nonspecific st-t changes " * 6
    hyps += real + [long, "sinus rhythm", refs[0]]
    refs += real[::-1] + ["sinus rhythm", long, refs[0]]
    return hyps, refs


@pytest.mark.parametrize("workers", [1, 2])
def test_scores_equal_bert_score(scorer, workers):
    hyps, refs = _pairs()
    ours = score_pairs(scorer, hyps, refs, token_budget=96, workers=workers)  # small budget: many padded batches
    p, r, f = scorer.score(hyps, refs, batch_size=64)
    assert ours.shape == (len(hyps), 3)
    torch.testing.assert_close(ours, torch.stack([p, r, f], dim=-1), atol=1e-5, rtol=0)
    assert ours[-1].tolist() == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)  # an identical pair


def test_rescaled_scores_equal_bert_score(tmp_path):
    baseline = tmp_path / "baseline.tsv"
    rows = ["LAYER,P,R,F"] + [f"{k},0.{k}1,0.{k}2,0.{k}3" for k in range(DEFAULT_NUM_LAYERS + 1)]
    baseline.write_text("\n".join(rows) + "\n")
    rescaling = BERTScorer(
        model_type=default_model_path(),
        num_layers=DEFAULT_NUM_LAYERS,
        lang="en",
        rescale_with_baseline=True,
        baseline_path=str(baseline),
    )
    hyps, refs = synthetic_pairs(20, seed=3)
    p, r, f = rescaling.score(hyps, refs)
    torch.testing.assert_close(score_pairs(rescaling, hyps, refs), torch.stack([p, r, f], -1), atol=1e-5, rtol=0)


def test_embedding_restores_thread_count(scorer):
    before = torch.get_num_threads()
    stats = embed_sentences(scorer, ["sinus rhythm", "atrial fibrillation with rapid ventricular response"], workers=2)
    assert torch.get_num_threads() == before
    emb, idf = stats["sinus rhythm"]
    assert emb.shape[0] == idf.shape[0] and idf[0] == 0 and idf[-1] == 0  # [CLS] and [SEP] carry no weight


def test_token_batches_cover_each_sentence_once_within_budget():
    lengths = [5, 30, 12, 12, 7, 40, 3, 12]
    batches = _token_batches(lengths, budget=36)
    order = [i for batch in batches for i in batch]
    assert sorted(order) == list(range(len(lengths)))
    assert [lengths[i] for i in order] == sorted(lengths, reverse=True)
    for batch in batches:  # padded size within budget, or a lone sentence longer than the budget
        assert len(batch) * max(lengths[i] for i in batch) <= 36 or len(batch) == 1
