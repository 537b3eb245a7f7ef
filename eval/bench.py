"""Speed benchmark of the evaluation suite on synthetic MIMIC-length report pairs."""

from __future__ import annotations

import random
import time

from .bertscore import bertscore_stats, get_scorer
from .text import text_stats

# MIMIC-IV-ECG-style machine statements with rough relative frequencies.
_STATEMENTS = [
    ("Sinus rhythm", 40),
    ("Sinus bradycardia", 12),
    ("Sinus tachycardia", 10),
    ("Atrial fibrillation", 8),
    ("Atrial fibrillation with rapid ventricular response", 3),
    ("Atrial flutter", 2),
    ("Normal ECG", 20),
    ("Abnormal ECG", 25),
    ("Borderline ECG", 15),
    ("Left axis deviation", 8),
    ("Left anterior fascicular block", 5),
    ("Right bundle branch block", 6),
    ("Left bundle branch block", 3),
    ("Incomplete right bundle branch block", 3),
    ("Left ventricular hypertrophy", 5),
    ("Low QRS voltages in limb leads", 4),
    ("Low QRS voltages in precordial leads", 2),
    ("Possible right atrial abnormality", 3),
    ("Left atrial abnormality", 3),
    ("ST elevation consider anterior injury", 2),
    ("ST depression", 3),
    ("T wave inversion", 3),
    ("Nonspecific ST-T wave changes", 6),
    ("Nonspecific T wave changes", 5),
    ("Premature ventricular contractions", 4),
    ("Premature atrial contractions", 3),
    ("First degree AV block", 4),
    ("Inferior infarct - age undetermined", 3),
    ("Anterior infarct - age undetermined", 2),
    ("Prolonged QT interval", 2),
    ("Poor R wave progression - probable normal variant", 2),
    ("Consider left ventricular hypertrophy", 2),
    ("Lateral ST-T changes may be due to myocardial ischemia", 2),
]


def synthetic_pairs(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``n`` (prediction, reference) pairs of 2-5 MIMIC-style statements; predictions share about half."""
    rng = random.Random(seed)
    texts, weights = zip(*_STATEMENTS)

    def report() -> list[str]:
        k = rng.randint(2, 5)
        return list(dict.fromkeys(rng.choices(texts, weights=weights, k=k)))

    hyps, refs = [], []
    for _ in range(n):
        ref = report()
        hyp = [s for s in ref if rng.random() < 0.6] + report()[: rng.randint(0, 2)] or ref[:1]
        refs.append(". ".join(ref))
        hyps.append(". ".join(dict.fromkeys(hyp)))
    return hyps, refs


def run_benchmark(n_pairs: int = 5000, seed: int = 0) -> dict:
    """Seconds for all text metrics (incl. METEOR's JVM start) and BERTScore pairs/s on ``n_pairs`` pairs."""
    hyps, refs = synthetic_pairs(n_pairs, seed)
    t0 = time.perf_counter()
    text_stats(hyps, refs)
    t_text = time.perf_counter() - t0
    t0 = time.perf_counter()
    get_scorer(None)
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    bertscore_stats(hyps, refs)
    t_bert = time.perf_counter() - t0
    return {
        "n_pairs": n_pairs,
        "text_metrics_s": round(t_text, 2),
        "bertscore_load_s": round(t_load, 2),
        "bertscore_s": round(t_bert, 2),
        "bertscore_pairs_per_s": round(n_pairs / t_bert, 1),
        "unique_sentences": len(set(hyps) | set(refs)),
    }
