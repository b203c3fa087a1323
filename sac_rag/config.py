"""SACConfig: every knob of Semantic-Anchor Compression, validated at construction.

The defaults follow the paper and its reference code (DESIGN.md section 1):
510-token sub-contexts, one anchor every ``ratio`` tokens, a learnable
embedding per anchor slot, bidirectional attention inside a sub-context, a
learned ``[LM]`` embedding before the question. This module knows nothing
about models or tensors; it only describes and checks choices.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Sequence

from .errors import ConfigError

__all__ = ["SACConfig", "ANCHOR_STRATEGIES", "ANCHOR_EMBEDDINGS", "DEFAULT_TEMPLATE", "QA_TEMPLATE"]

ANCHOR_STRATEGIES = ("uniform", "segment_end")
ANCHOR_EMBEDDINGS = ("per_slot", "shared", "none")
DEFAULT_TEMPLATE = "### Context:\n"
QA_TEMPLATE = "\n### Question:\n{question}\n### Answer:\n"

AnchorFn = Callable[[int, int], Sequence[int]]


@dataclass(frozen=True)
class SACConfig:
    """How passages are compressed into anchor KV.

    Fields that change the compressed representation are part of the KV
    fingerprint (see :meth:`fingerprint`): a KV compressed under one config is
    never decoded under another.
    """

    ratio: int = field(default=5, metadata={"help": "Compression ratio r: one anchor per r tokens."})
    chunk_tokens: int = field(default=510, metadata={"help": "Sub-context length in tokens; each is encoded on its own."})
    anchor_strategy: str | AnchorFn = field(
        default="uniform",
        metadata={
            "help": "'uniform' (reference: offsets (r-1)//2, +r, ...), 'segment_end' (last token of every r-token "
            "segment), or a callable (chunk_len, ratio) -> 0-based anchor offsets inside the sub-context."
        },
    )
    anchor_embedding: str = field(
        default="per_slot",
        metadata={"help": "'per_slot' (one vector per anchor slot, reference code), 'shared' (one vector, paper), 'none'."},
    )
    bidirectional: bool = field(default=True, metadata={"help": "All-visible attention inside a sub-context."})
    lm_token: bool = field(default=True, metadata={"help": "Insert the learned [LM] embedding after compressed context."})
    lm_tokens: int = field(
        default=1,
        metadata={
            "help": "How many learned [LM] vectors follow each run of compressed context when lm_token is on: 1 is "
            "the paper's single [LM] token; more make a short soft prompt for the frozen decoder (a departure from "
            "the paper). The first sits at the last compressed token's position, the others take the next ones."
        },
    )
    lora_rank: int = field(default=16, metadata={"help": "LoRA rank of the encoder adapter; 0 disables LoRA."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_targets: tuple[str, ...] = field(
        default=("q_proj", "k_proj", "v_proj", "o_proj"),
        metadata={"help": "Module names the LoRA adapter wraps."},
    )
    template: str = field(default=DEFAULT_TEMPLATE, metadata={"help": "Text put before every passage before compression."})
    max_input_tokens: int = field(
        default=131072, metadata={"help": "Refuse a single input (passage or prompt) longer than this many tokens."}
    )

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> ConfigError:
            return ConfigError(f"SACConfig.{name}: expected {expected}, got {getattr(self, name)!r}")

        for name in ("ratio", "chunk_tokens", "lora_rank", "lora_alpha", "max_input_tokens", "lm_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise bad(name, "an int")
        if self.ratio < 1:
            raise bad("ratio", "an int >= 1")
        if self.chunk_tokens < 1:
            raise bad("chunk_tokens", "an int >= 1")
        if self.ratio > self.chunk_tokens:
            raise ConfigError(f"SACConfig.ratio ({self.ratio}) must not exceed chunk_tokens ({self.chunk_tokens})")
        if self.lora_rank < 0:
            raise bad("lora_rank", "an int >= 0")
        if self.lora_alpha < 1:
            raise bad("lora_alpha", "an int >= 1")
        if self.max_input_tokens < 1:
            raise bad("max_input_tokens", "an int >= 1")
        if not 1 <= self.lm_tokens <= 64:
            raise bad("lm_tokens", "an int in [1, 64]")
        if not (callable(self.anchor_strategy) or self.anchor_strategy in ANCHOR_STRATEGIES):
            raise bad("anchor_strategy", f"one of {ANCHOR_STRATEGIES} or a callable")
        if self.anchor_embedding not in ANCHOR_EMBEDDINGS:
            raise bad("anchor_embedding", f"one of {ANCHOR_EMBEDDINGS}")
        for name in ("bidirectional", "lm_token"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "a bool")
        if not isinstance(self.template, str):
            raise bad("template", "a str")
        targets = self.lora_targets
        if isinstance(targets, str) or not all(isinstance(t, str) and t for t in targets) or not targets:
            raise bad("lora_targets", "a non-empty sequence of module names")
        object.__setattr__(self, "lora_targets", tuple(targets))

    @property
    def anchor_slots(self) -> int:
        """Number of per-slot anchor embeddings: the most anchors a sub-context can have."""
        if callable(self.anchor_strategy):
            return self.chunk_tokens
        return -(-self.chunk_tokens // self.ratio)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        strategy = self.anchor_strategy
        if callable(strategy):
            data["anchor_strategy"] = f"callable:{getattr(strategy, '__module__', '?')}.{getattr(strategy, '__qualname__', '?')}"
        data["lora_targets"] = list(self.lora_targets)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], anchor_strategy: AnchorFn | None = None) -> "SACConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"SACConfig: unknown fields {unknown}; known fields are {sorted(known)}")
        data = dict(data)
        if isinstance(data.get("anchor_strategy"), str) and data["anchor_strategy"].startswith("callable:"):
            if anchor_strategy is None:
                raise ConfigError(
                    f"this config was saved with a custom anchor strategy ({data['anchor_strategy']}); "
                    "pass the same callable as anchor_strategy= when loading"
                )
            data["anchor_strategy"] = anchor_strategy
        if "lora_targets" in data:
            data["lora_targets"] = tuple(data["lora_targets"])
        return cls(**data)

    def fingerprint(self) -> str:
        """Hash of the fields that change what a compressed KV contains."""
        data = self.to_dict()
        data.pop("max_input_tokens")
        if data["lm_tokens"] == 1:  # the field's default, added later: configs from before it keep their fingerprint
            data.pop("lm_tokens")
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]
