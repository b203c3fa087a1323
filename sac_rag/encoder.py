"""The SAC encoder: token sub-contexts in, anchors' per-layer keys/values out.

For every sub-context the input is ``[BOS] + tokens`` (BOS at the position
just before the chunk, tokens at their passage positions). A learnable
anchor embedding is added to the anchors' input embeddings, the base model
runs with its LoRA adapter enabled and an all-visible mask (or causal, if
configured), and each layer's keys/values are kept at the anchors only,
rotary already applied. The LM head is never computed. Several sub-contexts
are batched with right padding that padded keys can never see, so a batch
gives the same result as one by one.

This module knows token ids, chunks and the model's forward pass; it does
not know text, files or generation. It does not decide whether the adapter
is on: callers run it inside ``SACModel``'s encoder mode.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .anchors import Chunk
from .attention import MaskBuilder
from .config import SACConfig
from .models import run_decoder

__all__ = ["SACEmbeddings", "ChunkInput", "encode_chunks"]


class SACEmbeddings(nn.Module):
    """The learned vectors SAC adds to the base model: anchor embedding(s) and the [LM] embedding(s).

    Both live in the model's input-embedding space (after any embedding scale,
    such as Gemma's sqrt(hidden)). Initialised as in the reference code: anchor
    vectors N(0, 0.02); the [LM] vector from the mean and std of the embedding
    table. A seeded generator makes an untrained model deterministic.
    """

    def __init__(self, config: SACConfig, embed_output: torch.Tensor, seed: int = 0) -> None:
        super().__init__()
        hidden = embed_output.shape[-1]
        gen = torch.Generator().manual_seed(seed)
        slots = {"per_slot": config.anchor_slots, "shared": 1, "none": 0}[config.anchor_embedding]
        self.anchor = nn.Parameter(torch.randn(slots, hidden, generator=gen) * 0.02)
        mean, std = embed_output.float().mean().item(), embed_output.float().std().item()
        # one [LM] vector is stored as [hidden] (the adapters' format since the start), several as [count, hidden]
        shape = (hidden,) if config.lm_tokens == 1 else (config.lm_tokens, hidden)
        self.lm = nn.Parameter(torch.randn(shape, generator=gen) * std + mean)
        self.per_slot = config.anchor_embedding == "per_slot"

    def anchor_vectors(self, count: int) -> torch.Tensor | None:
        """The vectors to add to ``count`` anchors of one sub-context (None when there are none)."""
        if self.anchor.shape[0] == 0:
            return None
        if self.per_slot:
            return self.anchor[:count]
        return self.anchor.expand(count, -1)


@dataclass(frozen=True)
class ChunkInput:
    """One sub-context to encode: its token ids (no BOS) and its anchor plan."""

    ids: list[int]
    chunk: Chunk


def encode_chunks(
    model,
    embeddings: SACEmbeddings,
    masks: MaskBuilder,
    config: SACConfig,
    bos_id: int,
    pad_id: int,
    items: list[ChunkInput],
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Encode sub-contexts in one padded batch; returns per item ``(keys, values)``, each [L, H, A, D]."""
    from transformers import DynamicCache

    device = model.get_input_embeddings().weight.device
    lengths = [len(it.ids) + 1 for it in items]
    width = max(lengths)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    pos = torch.zeros((len(items), width), dtype=torch.long)
    valid = torch.zeros((len(items), width), dtype=torch.bool)
    for b, it in enumerate(items):
        n = lengths[b]
        ids[b, 0] = bos_id
        ids[b, 1:n] = torch.tensor(it.ids, dtype=torch.long)
        pos[b, :n] = torch.arange(it.chunk.start, it.chunk.start + n)
        pos[b, n:] = it.chunk.start + n - 1
        valid[b, :n] = True
    ids, pos, valid = ids.to(device), pos.to(device), valid.to(device)

    embeds = model.get_input_embeddings()(ids)
    anchor_idx = [torch.tensor(it.chunk.anchors, dtype=torch.long, device=device) + 1 for it in items]
    additions = []
    for b, idx in enumerate(anchor_idx):
        vec = embeddings.anchor_vectors(len(idx))
        if vec is not None:
            row = torch.zeros_like(embeds[b])
            additions.append(row.index_add(0, idx, vec.to(row.dtype)))
        else:
            additions.append(None)
    if any(a is not None for a in additions):
        embeds = embeds + torch.stack([a if a is not None else torch.zeros_like(embeds[0]) for a in additions])

    allowed = valid[:, None, :].expand(-1, width, -1)
    if not config.bidirectional:
        allowed = allowed & torch.ones(width, width, dtype=torch.bool, device=device).tril()
    # Padded query rows see the valid keys too, so no row is fully masked (no NaN); nobody reads them.
    mask = masks.build(allowed, pos, pos, symmetric=config.bidirectional, dtype=embeds.dtype)

    cache = DynamicCache()
    run_decoder(model, cache, inputs_embeds=embeds, position_ids=pos, attention_mask=mask)
    keys = torch.stack([layer.keys for layer in cache.layers])  # [L, B, H, T, D]
    values = torch.stack([layer.values for layer in cache.layers])
    return [(keys[:, b][:, :, idx], values[:, b][:, :, idx]) for b, idx in enumerate(anchor_idx)]
