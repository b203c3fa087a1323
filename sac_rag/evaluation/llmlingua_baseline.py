"""The LLMLingua (v1) baseline: compress passage text with ``llmlingua.PromptCompressor`` scored by our base model.

Nothing can be downloaded here, so the scorer is the local base model (the embedded Gemma 3 270M unless told
otherwise) and tiktoken's ``cl100k_base`` vocabulary, which LLMLingua asks for, is taken from the PyPI package
``bpe-openai`` into a local tiktoken cache. LLMLingua 0.2 handles the model's key/value cache as lists of
``(key, value)`` pairs, the transformers 4 layout; :class:`_LegacyCacheModel` translates to and from
transformers 5 cache objects. LLMLingua treats its ``rate`` as a wish, so callers must measure the ratio it
really reached (the harness does, in base-model tokens). Optional: needs ``pip install llmlingua bpe-openai``.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ModelLoadError
from ..models import cache_dir, cache_kwarg, embedded_model_path

__all__ = ["LLMLinguaCompressor"]

_CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


def _offline_tiktoken() -> None:
    """Point tiktoken at a local copy of cl100k_base taken from the bpe-openai package."""
    target_dir = Path(os.environ.get("TIKTOKEN_CACHE_DIR") or cache_dir() / "tiktoken")
    target = target_dir / hashlib.sha1(_CL100K_URL.encode()).hexdigest()
    if not target.exists():
        try:
            import bpe_openai
        except ImportError as exc:
            raise ModelLoadError("the LLMLingua baseline needs tiktoken's cl100k_base: pip install bpe-openai") from exc
        source = Path(bpe_openai.__file__).parent / "data" / "cl100k_base.tiktoken.gz"
        target_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(gzip.decompress(source.read_bytes()))
        os.replace(tmp, target)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(target_dir)


@dataclass
class _Out:
    logits: torch.Tensor
    past_key_values: list


class _LegacyCacheModel(torch.nn.Module):
    """Presents a transformers 5 causal LM with the list-of-(key, value) cache that LLMLingua 0.2 slices."""

    def __init__(self, model) -> None:
        super().__init__()
        self.inner = model
        self.config = model.config
        self.device = model.device

    def forward(self, input_ids, attention_mask=None, past_key_values=None, use_cache=True, **kwargs):
        from transformers import DynamicCache

        cache = DynamicCache(ddp_cache_data=[(k, v) for k, v in past_key_values]) if past_key_values else None
        name = cache_kwarg(self.inner)  # "cache" in newer transformers 5 releases, "past_key_values" before
        out = self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=True, **{name: cache})
        legacy = [(layer.keys, layer.values) for layer in getattr(out, name).layers]
        return _Out(logits=out.logits, past_key_values=legacy)


class LLMLinguaCompressor:
    """Compress text to a target ratio with LLMLingua v1 (question-aware token-level filtering)."""

    def __init__(self, model_path: str | None = None, device: str = "cpu") -> None:
        _offline_tiktoken()
        try:
            from llmlingua import PromptCompressor
        except ImportError as exc:
            raise ModelLoadError("the LLMLingua baseline needs: pip install llmlingua bpe-openai") from exc
        path = str(model_path or embedded_model_path())
        self._pc = PromptCompressor(model_name=path, device_map=device)
        self._pc.model = _LegacyCacheModel(self._pc.model)

    def compress(self, passages: list[str], question: str, ratio: float, *, segment: int = 200) -> str:
        """LLMLingua's compressed context for ``passages`` (asked for 1/``ratio`` of the tokens).

        The question conditions the compression but is not appended to the result (LLMLingua appends it by
        default, which would count it as context and repeat it in the prompt). ``segment`` is LLMLingua's
        ``iterative_size`` (tokens per compression segment, 200 by default): on ~150-token passages the default
        keeps most tokens whatever the rate; 30 lets it come near the asked ratio."""
        result = self._pc.compress_prompt(
            list(passages), question=question, rate=1.0 / ratio, use_context_level_filter=len(passages) > 1,
            use_sentence_level_filter=False, concate_question=False, iterative_size=segment,
        )
        return result["compressed_prompt"]
