"""Helpers shared by the tests (plain functions and constants; fixtures live in conftest.py)."""

from __future__ import annotations

import json

import torch

from sac_rag.anchors import Chunk, anchor_offsets
from sac_rag.encoder import ChunkInput, encode_chunks
from tiny import tiny_gemma3, tiny_llama

# The two tiny architectures: Llama 3 (llama3 rope scaling) and Gemma 3 (two rope bases, sliding window).
TINY = {"llama": tiny_llama, "gemma3": tiny_gemma3}

# The config under which SAC is plain causal decoding: every token is an anchor, no learned
# vectors, no header, no LoRA. ``sac.generate([sac.compress(ctx), q])`` must then equal the
# base model's own greedy decoding of [BOS] + ctx + q.
EXACT = dict(ratio=1, bidirectional=False, anchor_embedding="none", lm_token=False, template="", lora_rank=0)

_WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima"]


def text_of_length(n: int, salt: int = 0) -> str:
    """Deterministic printable ASCII text of exactly ``n`` characters (= ``n`` byte-tokenizer tokens)."""
    out, i = [], 0
    while sum(len(w) + 1 for w in out) < n + 1:
        out.append(_WORDS[(i * 5 + salt * 3 + salt // 7) % len(_WORDS)])
        i += 1
    text = " ".join(out)[:n]
    return text[:-1] + "." if text.endswith(" ") else text


def reference_anchor_positions(num_tokens: int, ratio: int, chunk: int = 510) -> list[int]:
    """The reference code's anchor positions (1-based token positions; BOS is position 0).

    Sub-contexts span x1..xn; anchors are x1 + (r-1)//2, +r, ... below xn + 1. A short
    tail sub-context with no such position gets one anchor at its first token.
    """
    out = []
    for x1 in range(1, num_tokens + 1, chunk):
        xn = min(x1 + chunk - 1, num_tokens)
        here = list(range(x1 + (ratio - 1) // 2, xn + 1, ratio))
        out.extend(here or [x1])
    return out


def fresh_encode(sac, ids: list[int], start: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode ``ids`` as ONE sub-context whose BOS sits at position ``start`` (tokens at start+1, ...)."""
    chunk = Chunk(start=start, length=len(ids), anchors=anchor_offsets(sac.config, len(ids)))
    with torch.inference_mode(), sac.encoder_mode():
        [(keys, values)] = encode_chunks(
            sac.model, sac.embeddings, sac.masks, sac.config, sac.bos_id, sac.pad_id, [ChunkInput(list(ids), chunk)]
        )
    return keys.clone(), values.clone()


def passage_ids(sac, text: str) -> list[int]:
    """The token ids SACModel compresses for ``text`` (template included)."""
    return sac.tokenize(sac.config.template + text)


def scramble_adapter(sac, seed: int = 0) -> None:
    """Give the adapter non-trivial weights, as training would (LoRA B != 0, moved embeddings)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sac.model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
        for p in (sac.embeddings.anchor, sac.embeddings.lm):
            p.copy_(torch.randn(p.shape, generator=gen))
    sac._refresh_fingerprint()


def write_squad(path) -> None:
    """A tiny SQuAD file: 2 articles x 3 paragraphs x 2 questions, each answer a number in its paragraph."""
    data = {"data": [
        {"title": f"Article {a}", "paragraphs": [
            {"context": f"Article {a}, part {p}: the number is {a * 10 + p}.", "qas": [
                {"id": f"{a}-{p}-{q}", "question": f"Q{q} on {a}/{p}?", "answers": [{"text": str(a * 10 + p)}]}
                for q in range(2)]}
            for p in range(3)]}
        for a in range(2)]}
    path.write_text(json.dumps(data), encoding="utf-8")


def save_tiny_base(path) -> str:
    """A tiny Llama and the byte tokenizer saved as a model directory (what TrainConfig.base_model names)."""
    from sac_rag import testing

    testing.tiny_llama(seed=0).save_pretrained(path)
    testing.byte_tokenizer().save_pretrained(path)
    return str(path)


def tiny_train_config(base: str, data: str, out, **kw):
    """A TrainConfig for the tiny base: a few float32 steps of one item each, a checkpoint after every step."""
    from sac_rag.training import TrainConfig

    fields = dict(stage="qa", qa_data=(data,), base_model=base, steps=2, grad_accum=1, dtype="float32", save_every_s=0,
                  out_dir=str(out), lora_rank=4, lora_alpha=32, max_passage_tokens=48, max_target_tokens=8,
                  max_distractors=1, max_questions=2, warmup=1, lr=1e-3, emb_lr=1e-2)
    fields.update(kw)
    return TrainConfig(**fields)
