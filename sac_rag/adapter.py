"""The on-disk SAC adapter: LoRA (peft format) + anchor/[LM] embeddings + config + provenance.

A directory holds::

    adapter_config.json, adapter_model.safetensors   the encoder's LoRA, as peft writes them
    sac_embeddings.safetensors                       "anchor" [slots, hidden], "lm" [hidden] ([lm_tokens, hidden] for several)
    sac_adapter.json                                 format, SACConfig, base-model fingerprint,
                                                     library versions, free-form training info

Only safetensors and JSON are read; nothing is unpickled. This module knows
files and fingerprints; it does not build models (``SACModel`` does).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import SACConfig
from .errors import AdapterMismatchError, ConfigError, ModelLoadError

__all__ = ["AdapterFiles", "read_adapter", "write_adapter", "weights_fingerprint", "sac_fingerprint", "ADAPTER_FORMAT"]

ADAPTER_FORMAT = "sac-rag/adapter"
ADAPTER_VERSION = 1
META_FILE = "sac_adapter.json"
EMB_FILE = "sac_embeddings.safetensors"
LORA_FILE = "adapter_model.safetensors"
LORA_CONFIG_FILE = "adapter_config.json"


@dataclass(frozen=True)
class AdapterFiles:
    """What an adapter directory holds, read and checked."""

    path: Path
    config: SACConfig
    base_fingerprint: str
    embeddings: dict[str, torch.Tensor]
    lora: dict[str, torch.Tensor] | None
    meta: dict[str, Any]
    peft_config: dict[str, Any] | None = None

    @property
    def fingerprint(self) -> str:
        """The :attr:`SACModel.fingerprint` this adapter gives once loaded on its base model (eval results and
        stored KVs carry that one), computed from the files alone: the LoRA tensors under the names peft gives
        the loaded parameters (adapter name ``default``), the embeddings under ``emb.``."""
        tensors = {f"emb.{k}": v for k, v in self.embeddings.items()}
        for name, t in (self.lora or {}).items():
            stem, dot, leaf = name.rpartition(".")
            tensors[f"{stem}.default.{leaf}" if dot and stem.endswith((".lora_A", ".lora_B")) else name] = t
        return sac_fingerprint(self.base_fingerprint, weights_fingerprint(tensors), self.config)


def weights_fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu", torch.float32).contiguous()
        h.update(name.encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def sac_fingerprint(base_fingerprint: str, adapter_fingerprint: str, config: SACConfig) -> str:
    """The fingerprint of a SAC model: its base model, its adapter's weights and its config, hashed together."""
    blob = f"{base_fingerprint}/{adapter_fingerprint}/{config.fingerprint()}"
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _versions() -> dict[str, str]:
    import peft
    import transformers

    from . import __version__

    return {"sac_rag": __version__, "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}


def adapter_card(meta: dict[str, Any]) -> str:
    """A short README for an adapter directory, from its ``sac_adapter.json``: what it is, how to load it,
    and what its training recorded."""
    cfg, info = meta.get("config") or {}, meta.get("info") or {}
    lines = [f"# sac-rag adapter: SAC at ratio {cfg.get('ratio', '?')}", "",
             f"A Semantic-Anchor Compression adapter for `{meta.get('base_model', '?')}` (LoRA r={cfg.get('lora_rank', '?')} "
             f"on {', '.join(cfg.get('lora_targets', []))}, anchor and `[LM]` embeddings in `{EMB_FILE}`). "
             "Load it with `sac_rag.SACModel.from_pretrained(base, adapter=this_directory)`; "
             f"`{META_FILE}` holds its configuration, the base model's fingerprint and its training record.", ""]
    if info.get("trained"):
        done = ", ".join(f"{k} {info[k]:,}" if isinstance(info[k], int) else f"{k} {info[k]}"
                         for k in ("stage", "step", "items") if k in info)
        before = (info.get("before") or {}).get("items")
        lines += [f"Training (last run): {done}" + (f", after {before:,} items already in the adapter it started from"
                                                     if before else "")
                  + (f"; recipe: {info['recipe']}" if info.get("recipe") else "") + ".", ""]
        if info.get("status"):
            lines += [f"Status: {info['status']}", ""]
    else:
        lines += ["Untrained: its anchors carry noise until it is trained (`sac-rag train`).", ""]
    lines += ["The shipped adapters' model card, with data, wall time and results: `docs/adapters.md` in the sac-rag "
              "repository.", ""]
    return "\n".join(lines)


def write_adapter(
    path: str | os.PathLike,
    *,
    peft_model,
    embeddings: dict[str, torch.Tensor],
    config: SACConfig,
    base_fingerprint: str,
    base_model: str,
    info: dict[str, Any] | None = None,
    lora: tuple[dict[str, Any], dict[str, torch.Tensor]] | None = None,
) -> Path:
    """Write an adapter directory atomically (a temporary directory renamed into place). The LoRA comes from
    ``peft_model`` or, for adapters built without a model (an average), as ``lora=(peft config dict, tensors)``
    in peft's file layout."""
    if peft_model is not None and lora is not None:
        raise ConfigError("write_adapter takes the LoRA from peft_model or from lora, not both")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    tmp.chmod(0o755)  # mkdtemp makes 0700; an adapter directory is ordinary data
    try:
        if peft_model is not None:
            peft_model.save_pretrained(tmp, safe_serialization=True)
        elif lora is not None:
            peft_config, tensors = lora
            (tmp / LORA_CONFIG_FILE).write_text(json.dumps(peft_config, indent=2, sort_keys=True))
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp / LORA_FILE)
        save_file({k: v.detach().cpu().float().contiguous() for k, v in embeddings.items()}, tmp / EMB_FILE)
        meta = {
            "format": ADAPTER_FORMAT,
            "version": ADAPTER_VERSION,
            "config": config.to_dict(),
            "base_fingerprint": base_fingerprint,
            "base_model": base_model,
            "versions": _versions(),
            "info": info or {},
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
        (tmp / "README.md").write_text(adapter_card(meta))  # in place of peft's blank model-card template
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def read_adapter(path: str | os.PathLike, *, anchor_strategy=None) -> AdapterFiles:
    path = Path(path)
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise ModelLoadError(f"{path} is not a sac-rag adapter directory (no {META_FILE})")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{meta_path} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise ModelLoadError(f"{meta_path} is not a sac-rag adapter description (a JSON object)")
    if meta.get("format") != ADAPTER_FORMAT:
        raise ModelLoadError(f"{meta_path}: format {meta.get('format')!r}, expected {ADAPTER_FORMAT!r}")
    if meta.get("version") != ADAPTER_VERSION:
        raise AdapterMismatchError(
            f"{path}: adapter format version {meta.get('version')}, this sac-rag reads {ADAPTER_VERSION}; retrain or upgrade"
        )
    try:
        config = SACConfig.from_dict(meta["config"], anchor_strategy=anchor_strategy)
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{meta_path}: bad config: {exc}") from exc
    try:
        embeddings = load_file(path / EMB_FILE)
        lora = load_file(path / LORA_FILE) if (path / LORA_FILE).exists() else None
    except (SafetensorError, OSError) as exc:
        raise ModelLoadError(f"{path}: cannot read adapter tensors: {exc}") from exc
    if config.lora_rank > 0 and lora is None:
        raise ModelLoadError(f"{path}: config says lora_rank={config.lora_rank} but {LORA_FILE} is missing")
    peft_config = None
    if (path / LORA_CONFIG_FILE).is_file():
        try:
            peft_config = json.loads((path / LORA_CONFIG_FILE).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelLoadError(f"{path / LORA_CONFIG_FILE} is not valid JSON: {exc}") from exc
    return AdapterFiles(path, config, meta.get("base_fingerprint", ""), embeddings, lora, meta, peft_config)
