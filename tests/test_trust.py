"""A run directory is data, not instructions: a tampered run never runs code, nor fetches a model, unless the
command line asks (`--trust_remote_code`, `--allow_unverified_backbone`)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_fit import tiny_args

from meit.fit import main as fit_main
from meit.report import main as report_main
from meit.runs.rundir import BACKBONE, CONFIG, load_run
from meit.util.errors import RunFileError, UntrustedCodeError

REPO = Path(__file__).resolve().parents[1]
RECORD = REPO / "tests" / "fixtures" / "ptbxl-mini" / "records100" / "00000" / "00001_lr"
EVIL_CODE = "from pathlib import Path\nPath({marker!r}).write_text('code from the model folder ran')\n" \
            "from transformers import LlamaForCausalLM\n\n\nclass EvilForCausalLM(LlamaForCausalLM):\n    pass\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny finished run (no test generation)."""
    base = tmp_path_factory.mktemp("trust")
    return fit_main(tiny_args(base / "cache", base / "run", "--test.skip", "true"))


def copy_run(trained: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained, tmp_path / "run"))


def reference(run_dir: Path) -> dict:
    return json.loads((run_dir / BACKBONE).read_text())


def set_reference(run_dir: Path, **changes) -> None:
    (run_dir / BACKBONE).write_text(json.dumps({**reference(run_dir), **changes}))


def evil_folder(run_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The run's backbone folder copied with an `auto_map` to a module that writes a marker file when imported."""
    folder = Path(shutil.copytree(reference(run_dir)["path"], tmp_path / "evil-backbone"))
    marker = tmp_path / "MARKER"
    (folder / "modeling_evil.py").write_text(EVIL_CODE.format(marker=str(marker)))
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (folder / "config.json").write_text(json.dumps(config))
    return folder, marker


def set_saved_trust(run_dir: Path) -> None:
    config = yaml.safe_load((run_dir / CONFIG).read_text())
    config["model"]["backbone"]["trust_remote_code"] = True
    (run_dir / CONFIG).write_text(yaml.safe_dump(config))


def report_cli(run_dir: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "meit.report", str(RECORD), "--run", str(run_dir), *flags],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


def test_a_saved_trust_remote_code_never_runs_the_folders_code(trained, tmp_path):
    run_dir = copy_run(trained, tmp_path)
    folder, marker = evil_folder(run_dir, tmp_path)
    set_saved_trust(run_dir)
    set_reference(run_dir, path=str(folder), hash=None)  # the attack: no hash, a folder with auto_map
    out = report_cli(run_dir)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    assert out.stderr.startswith("error: ") and str(run_dir / CONFIG) in out.stderr
    assert "model.backbone.trust_remote_code: true" in out.stderr and "--trust_remote_code" in out.stderr
    with pytest.raises(UntrustedCodeError, match="config.yaml"):
        load_run(run_dir)
    assert not marker.exists()


def test_auto_map_is_refused_without_the_flag_even_when_the_config_does_not_ask(trained, tmp_path, capsys):
    run_dir = copy_run(trained, tmp_path)
    folder, marker = evil_folder(run_dir, tmp_path)
    set_reference(run_dir, path=str(folder), hash=None)
    with pytest.raises(RunFileError, match=r'backbone\.json: "hash" is null'):
        load_run(run_dir)
    # Allowing an unverified backbone does not allow its code: transformers would load a built-in class instead.
    assert report_main([str(RECORD), "--run", str(run_dir), "--allow_unverified_backbone"]) == 2
    err = capsys.readouterr().err
    assert f"error: {folder / 'config.json'}: declares its own Python code" in err and "--trust_remote_code" in err
    assert not marker.exists()
    # Both flags on the command line: the user vouched for the folder, its code runs and the report is printed.
    out = report_cli(run_dir, "--allow_unverified_backbone", "--trust_remote_code")
    assert out.returncode == 0, out.stderr[-2000:]
    assert marker.exists() and out.stdout.strip()


def test_a_null_hash_is_refused_and_loads_with_the_flag_and_a_warning(trained, tmp_path, capsys):
    run_dir = copy_run(trained, tmp_path)
    set_reference(run_dir, hash=None)
    with pytest.raises(RunFileError) as refused:
        load_run(run_dir)
    assert refused.value.where == str(run_dir / BACKBONE) and "--allow_unverified_backbone" in str(refused.value)
    module, _, _ = load_run(run_dir, allow_unverified_backbone=True)
    assert module is not None
    assert f"WARNING: {run_dir / BACKBONE}: \"hash\" is null" in capsys.readouterr().err


def test_a_hash_of_another_backbone_is_refused(trained, tmp_path):
    run_dir = copy_run(trained, tmp_path)
    set_reference(run_dir, hash="0" * 64)
    with pytest.raises(RunFileError, match=r"backbone\.json: .* holds backbone .* instead of 0000000000000000"):
        load_run(run_dir)


def test_a_hub_id_is_refused_without_touching_the_network(trained, tmp_path, monkeypatch):
    run_dir = copy_run(trained, tmp_path)
    set_reference(run_dir, path="someone/evil-model", hash=None)

    def no_network(*args, **kwargs):
        raise AssertionError("loading a saved run opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    with pytest.raises(RunFileError, match=r"'someone/evil-model' is not a local folder .*network"):
        load_run(run_dir)


def test_fit_refuses_a_backbone_with_auto_map_without_its_flag(trained, tmp_path, capsys):
    folder, marker = evil_folder(trained, tmp_path)
    args = tiny_args(tmp_path / "cache", tmp_path / "run", "--test.skip", "true", "--model.llm", str(folder))
    with pytest.raises(SystemExit) as exit_info:
        fit_main(args)
    assert exit_info.value.code == 2
    assert f"error: {folder / 'config.json'}: declares its own Python code" in capsys.readouterr().err
    assert not marker.exists()


def test_a_downloaded_model_folder_is_verified_by_its_fingerprint(trained, tmp_path):
    from meit.llm.backbone import META_FILE, folder_fingerprint

    run_dir = copy_run(trained, tmp_path)
    folder = Path(shutil.copytree(reference(run_dir)["path"], tmp_path / "downloaded-llm"))
    (folder / META_FILE).unlink()  # a folder MEIT did not build: no build hash
    set_reference(run_dir, path=str(folder), hash=folder_fingerprint(folder))
    module, _, _ = load_run(run_dir)  # verified without --allow_unverified_backbone
    assert module is not None
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 0.5}))
    with pytest.raises(RunFileError, match=r"backbone\.json: .*downloaded-llm holds backbone files-sha256"):
        load_run(run_dir)


def test_fit_on_a_model_folder_saves_its_fingerprint(trained, tmp_path):
    from meit.llm.backbone import FINGERPRINT_PREFIX, META_FILE

    folder = Path(shutil.copytree(reference(trained)["path"], tmp_path / "downloaded-llm"))
    (folder / META_FILE).unlink()
    run_dir = fit_main(tiny_args(tmp_path / "cache", tmp_path / "run", "--test.skip", "true",
                                 "--model.llm", str(folder)))
    assert reference(run_dir)["hash"].startswith(FINGERPRINT_PREFIX)
    assert load_run(run_dir)[0] is not None
