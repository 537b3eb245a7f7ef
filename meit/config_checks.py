"""Checks of a whole run config at parse time, before any data is written or a backbone is built.

An invalid combination, an out-of-range value, an unknown keyword in `--model.encoder_kwargs` or
`--data.image.render`, or a key of the older flat config (`--model.cache_dir`, a `--config` file with
`model.fusion_kwargs`, ...) fails in a second with a `UserFacingError` naming the flag or file. One setting is filled
in rather than refused: `--model.branch image` with the default (signal) encoder picks the default image encoder.
"""

from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from meit.config import (
    MOVED_KEYS,
    DataConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TestConfig,
    refuse_legacy_keys,
)
from meit.data.render import RenderConfig
from meit.encoders.registry import ENCODERS
from meit.fusion.registry import FUSIONS
from meit.llm.lora import LoRAConfig
from meit.llm.mllama import MLLAMA_TOWERS
from meit.tasks.align import validate_recipe
from meit.util.errors import UserFacingError

DEFAULT_IMAGE_ENCODER = "cnn_small"
"""The encoder `--model.branch image` uses when the run names none (the signal default is replaced by it)."""
XATTN_FLAGS = {key: f"--model.xattn.{key}" for key in ("every", "n_heads", "gate_init")}
"""The options of `--model.fusion gated_xattn` alone."""


def check_run_config(cfg: RunConfig) -> tuple[RunConfig, list[str]]:
    """Validates `cfg` and fills in what the run leaves to MEIT.

    Returns:
        The config to run (a copy where a setting was filled in) and notes on what was filled in.

    Raises:
        meit.util.errors.UserFacingError: naming the offending flag.
    """
    model, notes = _resolve_encoder(cfg.model)
    _check_model(model)
    _check_data(cfg.data, model)
    _check_optim(cfg.optim)
    _check_test(cfg.test)
    return (cfg if model is cfg.model else replace(cfg, model=model)), notes


# ------------------------------------------------------------------------------------------------------ model


def _resolve_encoder(model: ModelConfig) -> tuple[ModelConfig, list[str]]:
    """The image branch with the untouched signal default encoder gets the default image encoder."""
    if model.encoder not in ENCODERS:
        raise UserFacingError("--model.encoder", f"unknown encoder {model.encoder!r}; choose from "
                                                 f"{', '.join(ENCODERS.names())}")
    default = ModelConfig().encoder
    if model.branch != "image" or model.image_model != "encoder" or model.encoder != default:
        return model, []
    accepted, open_ended = factory_keywords(ENCODERS.get(DEFAULT_IMAGE_ENCODER))
    kwargs = {k: v for k, v in model.encoder_kwargs.items() if open_ended or k in accepted}
    note = (f"--model.branch image: encoder {default} reads signals; using the image encoder {DEFAULT_IMAGE_ENCODER} "
            f"with {kwargs} (name another with --model.encoder)")
    return replace(model, encoder=DEFAULT_IMAGE_ENCODER, encoder_kwargs=kwargs), [note]


def _check_model(model: ModelConfig) -> None:
    encoder_factory = ENCODERS.get(model.encoder)
    _check_keywords("--model.encoder_kwargs", model.encoder_kwargs, encoder_factory, f"encoder {model.encoder}")
    if model.fusion not in FUSIONS:
        raise UserFacingError("--model.fusion", f"unknown fusion {model.fusion!r}; choose from "
                                                f"{', '.join(FUSIONS.names())}")
    _check_fusion_options(model)
    kind = input_kind(encoder_factory)
    if model.branch == "signal" and model.image_model == "mllama":
        raise UserFacingError("--model.image_model", "mllama is an image-branch model: add --model.branch image")
    if model.branch == "signal" and kind == "image":
        raise UserFacingError("--model.encoder", f"{model.encoder} reads images: add --model.branch image, or name a "
                                                 f"signal encoder")
    if model.branch == "image" and model.image_model == "encoder" and kind not in ("image", None):
        raise UserFacingError("--model.encoder", f"--model.branch image needs an image encoder (cnn_small, vit_tiny, "
                                                 f"resnet18_2d, pretrained_vision); {model.encoder} reads {kind}s")
    _check_lora(model.lora, "--model.lora", "module names")
    if model.branch == "image" and model.image_model == "mllama":
        _check_lora(model.vision_llm.lora, "--model.vision_llm.lora", "towers")
        unknown = sorted(set(model.vision_llm.lora.targets or ()) - set(MLLAMA_TOWERS))
        if unknown:
            raise UserFacingError("--model.vision_llm.lora.targets", f"unknown towers {unknown}; choose from "
                                                                      f"{', '.join(MLLAMA_TOWERS)}")
    validate_recipe(model)


def _check_fusion_options(model: ModelConfig) -> None:
    projector, xattn = model.projector, model.xattn
    _require(projector.mid_dim is None or (_is_int(projector.mid_dim) and projector.mid_dim >= 1),
             "--model.projector.mid_dim", "an integer >= 1 (or null: the encoder's width)", projector.mid_dim)
    if model.fusion != "gated_xattn":
        default = type(xattn)()
        for key, flag in XATTN_FLAGS.items():
            if getattr(xattn, key) != getattr(default, key):
                raise UserFacingError(flag, f"applies to --model.fusion gated_xattn only (this run: {model.fusion})")
        return
    _require(_is_int(xattn.every) and xattn.every >= 1, "--model.xattn.every", "an integer >= 1", xattn.every)
    _require(xattn.n_heads is None or (_is_int(xattn.n_heads) and xattn.n_heads >= 1), "--model.xattn.n_heads",
             "an integer >= 1 (or null: the backbone's)", xattn.n_heads)
    _require(_finite(xattn.gate_init), "--model.xattn.gate_init", "a finite number", xattn.gate_init)


def _check_lora(lora: LoRAConfig, flag: str, targets_are: str) -> None:
    _require(_is_int(lora.r) and lora.r >= 1, f"{flag}.r", "an integer >= 1", lora.r)
    _require(_positive(lora.alpha), f"{flag}.alpha", "a positive number", lora.alpha)
    _require(_finite(lora.dropout) and 0 <= lora.dropout < 1, f"{flag}.dropout", "in [0, 1)", lora.dropout)
    targets = lora.targets
    _require(targets is None or (bool(targets) and all(isinstance(t, str) and t for t in targets)),
             f"{flag}.targets", f"a non-empty list of {targets_are} (or null for the default)", targets)


# ---------------------------------------------------------------------------------------------------- the rest


def _check_data(data: DataConfig, model: ModelConfig) -> None:
    for flag, value in (("sampling_rate", data.sampling_rate), ("n_samples", data.n_samples),
                        ("synthetic_n", data.synthetic_n), ("batch_size", data.batch_size),
                        ("eval_batch_size", data.eval_batch_size)):
        _require(_is_int(value) and value >= 1, f"--data.{flag}", "an integer >= 1", value)
    _require(_is_int(data.num_workers) and data.num_workers >= 0, "--data.num_workers", "an integer >= 0",
             data.num_workers)
    _require(_is_int(data.max_report_tokens) and data.max_report_tokens >= 2, "--data.max_report_tokens",
             "an integer >= 2 (a report token and the end token)", data.max_report_tokens)
    try:
        data.prompt.texts()
    except (KeyError, IndexError, ValueError) as e:
        raise UserFacingError("--data.prompt.template", f"must hold `{{instruction}}` and no other field ({e!r}); "
                                                         f"got {data.prompt.template!r}") from None
    if model.branch == "image":
        size = data.image.size
        _require(len(size) == 2 and all(_is_int(s) and s >= 16 for s in size), "--data.image.size",
                 "[H, W] with sides >= 16", size)
        _check_keywords("--data.image.render", data.image.render, RenderConfig, "meit.data.render.RenderConfig")
        try:
            RenderConfig(**data.image.render)
        except (TypeError, ValueError) as e:
            raise UserFacingError("--data.image.render", str(e)) from None


def _check_optim(optim: OptimConfig) -> None:
    _require(_positive(optim.lr), "--optim.lr", "a positive number", optim.lr)
    _require(optim.encoder_lr is None or _positive(optim.encoder_lr), "--optim.encoder_lr",
             "a positive number (or null: --optim.lr)", optim.encoder_lr)
    _require(_finite(optim.weight_decay) and optim.weight_decay >= 0, "--optim.weight_decay", ">= 0",
             optim.weight_decay)
    _require(_finite(optim.warmup_ratio) and 0 <= optim.warmup_ratio < 1, "--optim.warmup_ratio", "in [0, 1)",
             optim.warmup_ratio)
    _require(len(optim.betas) == 2 and all(_finite(b) and 0 <= b < 1 for b in optim.betas), "--optim.betas",
             "two numbers in [0, 1)", optim.betas)


def _check_test(test: TestConfig) -> None:
    _require(_is_int(test.max_new_tokens) and test.max_new_tokens >= 1, "--test.max_new_tokens", "an integer >= 1",
             test.max_new_tokens)
    _require(test.limit is None or (_is_int(test.limit) and test.limit >= 1), "--test.limit",
             "an integer >= 1 (or null: every test record)", test.limit)
    _require(_is_int(test.n_bootstrap) and test.n_bootstrap >= 0, "--test.n_bootstrap", "an integer >= 0",
             test.n_bootstrap)


# ----------------------------------------------------------------------------------------------- older configs


def check_no_legacy_args(args: list[str]) -> None:
    """Refuses a command line that uses a key of the older flat config, pointing to where it is now.

    Looks at the flags themselves (`--model.cache_dir DIR`) and at every `--config FILE` they name.

    Raises:
        meit.util.errors.UserFacingError: naming the flag or the file, and the key's new name.
    """
    for i, arg in enumerate(args):
        flag, _, inline = arg.partition("=")
        if flag.startswith("--") and flag[2:] in MOVED_KEYS:
            raise UserFacingError(flag, f"is now --{MOVED_KEYS[flag[2:]]} (the config was regrouped; see "
                                        f"docs/CONFIG.md)")
        if flag == "--config":
            path = inline or (args[i + 1] if i + 1 < len(args) else "")
            _check_config_file(Path(path))


def _check_config_file(path: Path) -> None:
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return  # the parser reports an unreadable file itself
    refuse_legacy_keys(values, path)


# ---------------------------------------------------------------------------------------------------- helpers


def factory_keywords(factory: Callable[..., Any]) -> tuple[set[str], bool]:
    """The keyword arguments `factory(**kwargs)` accepts.

    A factory taking `**kwargs` is followed into the class it is annotated to return, and a class's `**kwargs`
    into its base classes' `__init__`.

    Returns:
        The names, and whether the set is open-ended (some `**kwargs` could not be followed: accept anything).
    """
    names: set[str] = set()
    if inspect.isclass(factory):
        return _class_keywords(factory, names)
    if _collect(inspect.signature(factory), names):
        return names, False
    returned = typing.get_type_hints(factory).get("return")
    if inspect.isclass(returned):
        return _class_keywords(returned, names)
    return names, True


def input_kind(factory: Callable[..., Any]) -> str | None:
    """"signal" or "image": what the encoder `factory` builds reads (None when its class does not say)."""
    cls = factory if inspect.isclass(factory) else typing.get_type_hints(factory).get("return")
    return getattr(cls, "input_kind", None) if inspect.isclass(cls) else None


def _class_keywords(cls: type, names: set[str]) -> tuple[set[str], bool]:
    for klass in cls.__mro__:
        if klass is object:
            return names, False
        if "__init__" in vars(klass) and _collect(inspect.signature(klass.__init__), names):
            return names, False
    return names, False


def _collect(signature: inspect.Signature, names: set[str]) -> bool:
    """Adds the signature's keyword-capable parameter names; True when it takes no `**kwargs` (the set is final)."""
    closed = True
    for param in signature.parameters.values():
        if param.kind is param.VAR_KEYWORD:
            closed = False
        elif param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY) and param.name != "self":
            names.add(param.name)
    return closed


def _check_keywords(flag: str, kwargs: Any, factory: Callable[..., Any], what: str) -> None:
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise UserFacingError(flag, f"must be a mapping of keyword -> value, got {kwargs!r}")
    accepted, open_ended = factory_keywords(factory)
    unknown = sorted(set(kwargs) - accepted)
    if unknown and not open_ended:
        raise UserFacingError(flag, f"{what} takes no {', '.join(map(repr, unknown))}; it takes: "
                                    f"{', '.join(sorted(accepted))}")


def _require(ok: bool, flag: str, expected: str, value: Any) -> None:
    if not ok:
        raise UserFacingError(flag, f"must be {expected}, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive(value: Any) -> bool:
    return _finite(value) and value > 0
