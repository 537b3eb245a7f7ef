"""Checks of a whole run config at parse time, before any data is written or a backbone is built.

An invalid combination, an out-of-range value or an unknown keyword in `--model.encoder_kwargs` /
`--model.fusion_kwargs` fails in a second with a `UserFacingError` naming the flag. One setting is filled in rather
than refused: `--model.branch image` with the default (signal) encoder picks the default image encoder.
"""

from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from meit.config import DataConfig, ModelConfig, OptimConfig, RunConfig, TestConfig
from meit.encoders.registry import ENCODERS
from meit.fusion.registry import FUSIONS
from meit.llm.lora import LoRAConfig
from meit.llm.mllama import MLLAMA_TOWERS
from meit.tasks.align import validate_recipe
from meit.util.errors import UserFacingError

DEFAULT_IMAGE_ENCODER = "cnn_small"
"""The encoder `--model.branch image` uses when the run names none (the signal default is replaced by it)."""
FUSION_SET_BY_RUN = {"llm": "the backbone", "encoder": "--model.encoder", "ecg_input": "--model.ecg_input"}
"""Fusion constructor arguments the run fills in itself, and the flag that sets each."""


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
    for key, flag in FUSION_SET_BY_RUN.items():
        if key in model.fusion_kwargs:
            raise UserFacingError("--model.fusion_kwargs", f"{key!r} is set by {flag}, not here")
    _check_keywords("--model.fusion_kwargs", model.fusion_kwargs, FUSIONS.get(model.fusion), f"fusion {model.fusion}")
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
                        ("eval_batch_size", data.eval_batch_size), ("max_length", data.max_length)):
        _require(_is_int(value) and value >= 1, f"--data.{flag}", "an integer >= 1", value)
    _require(_is_int(data.num_workers) and data.num_workers >= 0, "--data.num_workers", "an integer >= 0",
             data.num_workers)
    if model.branch == "image":
        size = data.image_size
        _require(len(size) == 2 and all(_is_int(s) and s >= 16 for s in size), "--data.image_size",
                 "[H, W] with sides >= 16", size)


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
        choices = sorted(accepted - set(FUSION_SET_BY_RUN))
        raise UserFacingError(flag, f"{what} takes no {', '.join(map(repr, unknown))}; it takes: {', '.join(choices)}")


def _require(ok: bool, flag: str, expected: str, value: Any) -> None:
    if not ok:
        raise UserFacingError(flag, f"must be {expected}, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive(value: Any) -> bool:
    return _finite(value) and value > 0
