"""`--data.split folds|patient` and training without validation when the validation split is empty."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from test_fit import print_config, tiny_args

from meit.config import DataConfig
from meit.data.sources import open_source
from meit.data.splits import check_disjoint_patients, split_records
from meit.fit import main
from meit.tasks.datamodule import MEITDataModule
from meit.util.errors import UserFacingError


def _drop_fold(root, fold):
    frame = pd.read_csv(root / "ptbxl_database.csv", dtype=str, keep_default_na=False)
    frame[frame["strat_fold"] != str(fold)].to_csv(root / "ptbxl_database.csv", index=False)
    return root


def _ids(splits):
    return {name: [r.record_id for r in records] for name, records in splits.items()}


def test_patient_split_keeps_each_patient_in_one_split_and_is_seeded(make_ptbxl):
    source = open_source("ptbxl", make_ptbxl(n=80))  # 2 records a patient, folds 1..10
    splits = split_records(source, seed=5, method="patient")
    check_disjoint_patients(splits)
    owner = {r.patient_id: name for name, records in splits.items() for r in records}
    assert all(owner[r.patient_id] == name for name, records in splits.items() for r in records)
    assert sum(len(v) for v in splits.values()) == 80 and all(splits.values())
    assert {r.fold for r in splits["val"]} != {9}  # the folds are not used
    assert _ids(split_records(source, seed=5, method="patient")) == _ids(splits)
    assert _ids(split_records(source, seed=6, method="patient")) != _ids(splits)
    assert _ids(split_records(source, method="folds")) == _ids(split_records(source))  # folds: the default


def test_unknown_split_names_the_flag(make_ptbxl, capsys):
    source = open_source("ptbxl", make_ptbxl(n=4))
    with pytest.raises(UserFacingError, match=r"--data\.split: unknown split 'random'; choose from folds, patient"):
        split_records(source, method="random")
    assert print_config(capsys, "--data.split", "patient")["data"]["split"] == "patient"
    with pytest.raises(SystemExit):  # validated when the command line is parsed
        main(["--data.split", "random", "--print_config"])
    assert "random" in capsys.readouterr().err


def test_empty_val_split_warns_and_has_no_val_loader(make_ptbxl, tmp_path):
    root = _drop_fold(make_ptbxl(n=100), 9)
    dm = MEITDataModule(DataConfig(dataset="ptbxl", root=str(root), cache_dir=str(tmp_path / "cache")))
    with pytest.warns(UserWarning, match=r"the val split of .* is empty .*--data\.split folds.*training without "
                      r"validation"):
        dm.setup()
    assert set(dm.datasets) == {"train", "test"} and dm.val_dataloader() == []
    assert "`--data.split patient`" in dm.notes[0]
    patient = MEITDataModule(DataConfig(dataset="ptbxl", root=str(root), cache_dir=str(tmp_path / "cache"),
                                        split="patient"))
    patient.setup()
    assert set(patient.datasets) == {"train", "val", "test"} and not patient.notes


def test_empty_train_split_is_an_error_naming_the_split(make_ptbxl, tmp_path):
    root = make_ptbxl(n=20)
    frame = pd.read_csv(root / "ptbxl_database.csv")
    frame[frame["strat_fold"] >= 9].to_csv(root / "ptbxl_database.csv", index=False)
    dm = MEITDataModule(DataConfig(dataset="ptbxl", root=str(root), cache_dir=str(tmp_path / "cache")))
    with pytest.raises(UserFacingError, match=r"--data\.split folds: the train split of .* is empty"):
        dm.setup()


def test_a_ptbxl_subset_without_fold_9_trains_without_validation(make_ptbxl, tmp_path, capsys):
    root = _drop_fold(make_ptbxl(n=20), 9)
    run_dir = tmp_path / "run"
    with pytest.warns(UserWarning, match="the val split .* is empty"):
        main(tiny_args(tmp_path / "cache", run_dir, "--data.dataset", "ptbxl", "--data.root", str(root),
                       "--trainer.max_steps", "2", "--test.skip", "true"))
    info = json.loads((run_dir / "run.json").read_text())
    assert info["train_steps"] == 2 and set(info["n_records"]) == {"train", "test"}
    assert "training without validation" in info["notes"][0]
    assert "note: the val split of" in capsys.readouterr().out
