"""Where the anchors go: split a token sequence into sub-contexts and pick anchors in each.

Positions follow the reference code: a passage's tokens occupy positions
1..n (position 0 is the BOS sink), sub-contexts are consecutive runs of
``chunk_tokens`` tokens, and in a sub-context spanning ``x1..xn`` the uniform
anchors sit at ``x1 + (r-1)//2, x1 + (r-1)//2 + r, ...`` below ``xn + 1``.
This module knows token counts only: no tokenizer, no model, no tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import SACConfig
from .errors import ConfigError

__all__ = ["Chunk", "anchor_offsets", "plan_chunks"]


@dataclass(frozen=True)
class Chunk:
    """One sub-context: tokens ``start .. start+length-1`` (0-based) of a passage, and its anchors.

    ``anchors`` are 0-based offsets inside the chunk; the global position of
    anchor offset ``a`` is ``start + 1 + a``.
    """

    start: int
    length: int
    anchors: tuple[int, ...]

    @property
    def anchor_positions(self) -> tuple[int, ...]:
        return tuple(self.start + 1 + a for a in self.anchors)


def anchor_offsets(config: SACConfig, chunk_len: int) -> tuple[int, ...]:
    """0-based anchor offsets inside a sub-context of ``chunk_len`` tokens."""
    r = config.ratio
    strategy = config.anchor_strategy
    if strategy == "uniform":
        offsets = tuple(range((r - 1) // 2, chunk_len, r))
        # The reference falls back to the first token when a short tail chunk has no anchor.
        return offsets or (0,)
    if strategy == "segment_end":
        return tuple(min(i + r - 1, chunk_len - 1) for i in range(0, chunk_len, r))
    offsets = tuple(int(a) for a in strategy(chunk_len, r))
    if not offsets:
        raise ConfigError(f"anchor strategy {strategy!r} returned no anchors for a {chunk_len}-token sub-context")
    if list(offsets) != sorted(set(offsets)) or offsets[0] < 0 or offsets[-1] >= chunk_len:
        raise ConfigError(
            f"anchor strategy {strategy!r} must return sorted, unique offsets in [0, {chunk_len}); got {offsets[:8]}..."
        )
    if config.anchor_embedding == "per_slot" and len(offsets) > config.anchor_slots:
        raise ConfigError(f"anchor strategy returned {len(offsets)} anchors; at most {config.anchor_slots} fit")
    return offsets


def plan_chunks(config: SACConfig, num_tokens: int) -> list[Chunk]:
    """Split ``num_tokens`` tokens into sub-contexts and choose their anchors."""
    chunks = []
    for start in range(0, num_tokens, config.chunk_tokens):
        length = min(config.chunk_tokens, num_tokens - start)
        chunks.append(Chunk(start=start, length=length, anchors=anchor_offsets(config, length)))
    return chunks
