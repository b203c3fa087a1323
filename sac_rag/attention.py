"""Attention masks that the encoder and the decoder hand to a Hugging Face model.

SAC needs masks the library does not build: all-visible inside a
sub-context (encoder), and, in the decoder, stored anchors that stay visible
to Gemma 3's sliding-window layers however far back they sit. This module
turns "which key may each query see" into the per-layer-type 4-D masks a
model accepts (a dict for models that take one, a single tensor otherwise),
in the format of its attention implementation (bool for SDPA, additive
float for eager). It knows layer types and window sizes, not anchors or text.
"""

from __future__ import annotations

import inspect

import torch

from .errors import ConfigError
from .models import decoder_of

__all__ = ["MaskBuilder"]

_SUPPORTED_TYPES = ("full_attention", "sliding_attention")


class MaskBuilder:
    """Builds masks for one model.

    ``build(allowed, q_pos, k_pos, k_pinned)``: ``allowed`` [B, Q, K] says which
    keys each query may see before any window; sliding-window layers also drop
    keys farther than the window in position, unless the key is pinned
    (``k_pinned`` [B, K]).
    """

    def __init__(self, model) -> None:
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        n = config.num_hidden_layers
        self.layer_types = list(getattr(config, "layer_types", None) or ["full_attention"] * n)
        unknown = sorted(set(self.layer_types) - set(_SUPPORTED_TYPES))
        if unknown:
            raise ConfigError(f"layer types {unknown} are not supported; supported: {_SUPPORTED_TYPES}")
        window = getattr(config, "sliding_window", None)
        if "sliding_attention" in self.layer_types and not window:
            raise ConfigError("the model has sliding-window layers but no sliding_window size in its config")
        self.window = int(window) if window else None
        inner = decoder_of(model)
        self.takes_dict = "causal_mask_mapping" in inspect.getsource(type(inner).forward)
        self.types = sorted(set(self.layer_types))
        if len(self.types) > 1 and not self.takes_dict:
            raise ConfigError(f"{type(inner).__name__} mixes layer types but takes a single attention mask")
        impl = getattr(config, "_attn_implementation", None) or "sdpa"
        if impl not in ("sdpa", "eager"):
            raise ConfigError(f"attention implementation {impl!r} cannot take custom masks; load with attn_implementation='sdpa'")
        self.boolean = impl == "sdpa"

    def build(
        self,
        allowed: torch.Tensor,
        q_pos: torch.Tensor,
        k_pos: torch.Tensor,
        k_pinned: torch.Tensor | None = None,
        *,
        symmetric: bool = False,
        dtype: torch.dtype = torch.float32,
    ):
        masks = {}
        for t in self.types:
            m = allowed
            if t == "sliding_attention":
                dist = q_pos[:, :, None] - k_pos[:, None, :]
                if symmetric:
                    dist = dist.abs()
                near = dist < self.window
                if k_pinned is not None:
                    near = near | k_pinned[:, None, :]
                m = m & near
            m = m[:, None]  # [B, 1, Q, K]
            if not self.boolean:
                m = torch.zeros(m.shape, dtype=dtype, device=m.device).masked_fill(~m, torch.finfo(dtype).min)
            masks[t] = m
        return masks if self.takes_dict else masks[self.types[0]]
