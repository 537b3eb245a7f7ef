"""`meit.runs.experiment`: fit blocks merge group by group, and a finished run is reused only for the same settings."""

from __future__ import annotations

import pytest
import yaml

from meit.runs.experiment import check_fit_block, merge_fit_blocks, train_or_reuse
from meit.runs.rundir import FINISHED_RUN_FILES
from meit.util.errors import UserFacingError


def test_a_representation_block_overrides_the_shared_one_key_by_key():
    shared = {"model": {"recipe": "meit", "encoder_kwargs": {"n_tokens": 8, "widths": [8, 8, 16, 16]}},
              "trainer": {"max_epochs": 4}, "seed_everything": 1}
    own = {"model": {"branch": "image", "encoder_kwargs": {"n_tokens": 4}}, "seed_everything": 2}
    merged = merge_fit_blocks(shared, own)
    assert merged == {"model": {"recipe": "meit", "branch": "image", "encoder_kwargs": {"n_tokens": 4}},
                      "trainer": {"max_epochs": 4}, "seed_everything": 2}
    assert shared["model"] == {"recipe": "meit", "encoder_kwargs": {"n_tokens": 8, "widths": [8, 8, 16, 16]}}


@pytest.mark.parametrize(("block", "match"), [(["--model.branch", "image"], "must be a mapping"),
                                              ({"run_dir": "x"}, "holds run_dir")])
def test_a_bad_fit_block_names_where_it_is(block, match):
    with pytest.raises(UserFacingError, match=match) as error:
        check_fit_block(block, "--representations.image")
    assert error.value.where == "--representations.image"
    assert check_fit_block(None, "fit") == {}


def finished_run(run_dir, config):
    run_dir.mkdir()
    for name in FINISHED_RUN_FILES:
        (run_dir / name).write_text("{}")
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))


def test_a_finished_run_of_the_same_settings_is_reused(tmp_path, capsys):
    finished_run(tmp_path / "run", {"seed_everything": 0, "model": {"recipe": "meit", "lora": {"r": 4}},
                                    "optim": {"betas": [0.9, 0.999]}})
    assert not train_or_reuse(tmp_path / "run", {"model": {"recipe": "meit"}, "optim": {"betas": (0.9, 0.999)},
                                                 "seed_everything": 0}, "compare")
    assert "not training again" in capsys.readouterr().out


def test_a_finished_run_of_other_settings_is_refused_not_reused(tmp_path):
    finished_run(tmp_path / "run", {"seed_everything": 0,
                                    "model": {"recipe": "aligned", "encoder_kwargs": {"n_tokens": 8, "widths": [8]}}})
    with pytest.raises(UserFacingError, match="model.recipe: 'aligned', but the experiment asks for 'meit'"):
        train_or_reuse(tmp_path / "run", {"model": {"recipe": "meit"}}, "compare")
    with pytest.raises(UserFacingError, match="model.encoder_kwargs: .*n_tokens': 8, 'widths"):
        train_or_reuse(tmp_path / "run", {"model": {"encoder_kwargs": {"n_tokens": 8}}}, "compare")
    with pytest.raises(UserFacingError, match="seed_everything: 0, but the experiment asks for 1"):
        train_or_reuse(tmp_path / "run", {"seed_everything": 1}, "zeroshot")
