"""The encoder probe: `python -m meit.probe --run RUN_DIR` and its automatic run at the end of `meit.fit`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from meit.eval.label_metrics import build_label_stats
from meit.fit import main
from meit.probe import main as probe_main
from meit.probe import train_probe
from tests.test_fit import tiny_args


def test_probe_learns_labels_the_features_carry():
    gen = torch.Generator().manual_seed(0)
    y = torch.rand(200, 2, generator=gen) > 0.5
    x = torch.randn(200, 8, generator=gen) * 0.3 + torch.cat([y.float() * 2, torch.zeros(200, 6)], dim=1)
    labels = [{c for c, on in zip(("AFIB", "NORM"), row) if on} for row in y.tolist()]
    x = (x - x.mean(0)) / x.std(0)
    probs = torch.sigmoid(train_probe(x, labels, ["AFIB", "NORM"])(x)).detach().numpy()
    pred = [{c for c, p in zip(("AFIB", "NORM"), row) if p >= 0.5} for row in probs]
    stats = build_label_stats(labels, pred, [None] * len(pred))["statement"].aggregate(np.ones((1, len(pred))))
    assert stats["label_macro_f1"][0] > 0.95


@pytest.mark.slow
def test_fit_probes_its_encoder_and_the_probe_command_rescores(tmp_path, capsys):
    run_dir = tmp_path / "run"
    main(tiny_args(tmp_path / "cache", run_dir))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["probe_label_macro_f1"] <= 1.0 and 0.0 <= metrics["probe_label_auc"] <= 1.0
    assert "the encoder knows" in (run_dir / "report.md").read_text()
    capsys.readouterr()
    assert probe_main(["--run", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert f"probe_label_macro_f1 {metrics['probe_label_macro_f1']:.3f}" in out
    assert json.loads((run_dir / "metrics.json").read_text())["probe_label_macro_f1"] == metrics["probe_label_macro_f1"]
    assert (run_dir / "report.md").read_text().count("## Encoder probe") == 1


def test_probe_refuses_a_run_without_metrics(tmp_path, capsys):
    assert probe_main(["--run", str(tmp_path)]) == 2
    assert "metrics.json not found" in capsys.readouterr().err
