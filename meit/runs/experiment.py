"""The train-or-reuse step of the experiment drivers (`meit.compare`, `meit.zeroshot`).

An experiment YAML holds its runs as `fit:` blocks in `python -m meit.fit`'s own config schema (the keys of a
`configs/*.yaml` preset: `trainer`, `model`, `data`, `optim`, `test`, `seed_everything`). Each block becomes a run
directory, trained by `meit.fit` unless that directory already holds a finished run of the same settings.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml

from meit.config import refuse_legacy_keys
from meit.runs.rundir import check_same_settings, is_finished
from meit.util.atomic import write_text
from meit.util.errors import UserFacingError


def merge_fit_blocks(shared: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """`own` over `shared`, group by group: `own`'s keys replace `shared`'s inside each group (`model`, `data`, ...);
    a value that is itself a mapping (e.g. `model.encoder_kwargs`) is replaced whole, as a later flag replaces it."""
    merged = {group: dict(value) if isinstance(value, dict) else value for group, value in shared.items()}
    for group, value in own.items():
        if isinstance(value, dict) and isinstance(merged.get(group), dict):
            merged[group] = {**merged[group], **value}
        else:
            merged[group] = value
    return merged


def check_fit_block(block: Any, where: str) -> dict[str, Any]:
    """`block` if it is a mapping of `meit.fit` option groups; a `UserFacingError` naming `where` otherwise."""
    if block is None:
        return {}
    if not isinstance(block, dict) or not all(isinstance(k, str) for k in block):
        raise UserFacingError(where, f"must be a mapping of meit.fit options (trainer:, model:, data:, ...), got "
                                     f"{block!r}")
    if "run_dir" in block:
        raise UserFacingError(where, "holds run_dir: the experiment chooses each run's directory")
    refuse_legacy_keys(block, where)
    return block


def asks_remote_code(block: dict[str, Any]) -> bool:
    """Whether a `meit.fit` config block sets `model.backbone.trust_remote_code` to true (the experiment's own YAML,
    so it allows remote code as the same `meit.fit` flag does)."""
    return ((block.get("model") or {}).get("backbone") or {}).get("trust_remote_code") is True


def train_or_reuse(run_dir: Path, block: dict[str, Any], tag: str) -> bool:
    """Trains `block` into `run_dir` with `meit.fit`, unless `run_dir` holds a finished run of these settings.

    Args:
        run_dir: the run's directory.
        block: `meit.fit` options as nested keys (a `fit:` block).
        tag: the driver's name for progress lines ("compare", "zeroshot").

    Returns:
        Whether it trained (False: the finished run was reused).

    Raises:
        meit.util.errors.UserFacingError: `run_dir` holds a finished run whose config.yaml differs from `block`.
    """
    if is_finished(run_dir):
        check_same_settings(run_dir, block)
        print(f"[{tag}] {run_dir} holds a finished run of these settings: not training again", flush=True)
        return False
    from meit.fit import main as fit_main  # start-up time: Lightning loads only when a run is trained

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fit.yaml"
        write_text(path, yaml.safe_dump(block))
        fit_main(["--config", str(path), "--run_dir", str(run_dir)])
    return True
