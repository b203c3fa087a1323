"""AnchorKV: the compressed form of a passage, with its provenance, placement and file format.

Tensor layout (one passage, or several concatenated)::

    keys, values : [num_layers, num_kv_heads, num_anchors, head_dim]
                   keys carry rotary position embedding for ``positions``
    positions    : [num_anchors] int64, absolute positions of the anchors
    start        : the position just before the first token the KV stands for
                   (a fresh passage has start 0: BOS at 0, tokens at 1..num_tokens)

Re-positioning (:meth:`AnchorKV.placed_at`) is exact because rotary embedding
is a rotation: rotating a key by ``delta`` moves it from position ``p`` to
``p + delta``. :class:`Rotary` holds the model's own inverse frequencies per
layer (Llama 3 scaling and Gemma 3's two bases are baked into them) and
travels inside the file, so a loaded KV can be placed without the model.

This module knows tensors and files, not models or tokenizers.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .errors import CorruptKVError, InvalidInputError, KVMismatchError
from .fileio import write_atomic

__all__ = ["AnchorKV", "Rotary", "FORMAT_NAME", "FORMAT_VERSION"]

FORMAT_NAME = "sac-rag/anchor-kv"
FORMAT_VERSION = "1"


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


@dataclass(frozen=True)
class Rotary:
    """Per-layer rotary inverse frequencies of a model.

    ``inv_freq[t]`` is the frequency vector of layer type ``t``;
    ``layer_type[l]`` says which type layer ``l`` uses.
    """

    inv_freq: torch.Tensor  # [num_types, rotary_dim // 2] float32
    layer_type: torch.Tensor  # [num_layers] int64

    def rotate(self, keys: torch.Tensor, delta: int | torch.Tensor) -> torch.Tensor:
        """Rotate ``keys`` ([layers, heads, n, head_dim]) by ``delta`` positions (scalar or [n])."""
        if isinstance(delta, int) and delta == 0:
            return keys
        freqs = self.inv_freq.to(keys.device)[self.layer_type.to(keys.device)]  # [L, R/2]
        delta_t = torch.as_tensor(delta, dtype=torch.float64, device=keys.device).reshape(-1)  # [n] or [1]
        angle = (delta_t[None, :, None] * freqs[:, None, :].double()).float()  # [L, n|1, R/2]
        angle = torch.cat((angle, angle), dim=-1)[:, None]  # [L, 1, n|1, R]
        rot_dim = angle.shape[-1]
        k = keys.float()
        k_rot, k_pass = k[..., :rot_dim], k[..., rot_dim:]
        k_rot = k_rot * angle.cos() + _rotate_half(k_rot) * angle.sin()
        return torch.cat((k_rot, k_pass), dim=-1).to(keys.dtype)


def _digest(tensors: Sequence[torch.Tensor]) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy())  # hashed in place, no copy
    return h.hexdigest()


_FILE_TENSORS = ("keys", "values", "positions", "rotary_inv_freq", "rotary_layer_type")
_FILE_FIELDS = ("format", "version", "num_tokens", "start", "fingerprint", "content_hash")


def _file_checksum(tensors: dict, metadata: dict) -> str:
    """Checksum of everything a file holds: every tensor (dtype, shape, data) and every metadata field."""
    h = hashlib.sha256()
    for name in _FILE_TENSORS:
        t = tensors[name]
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}:".encode())
        h.update(_digest([t]).encode())
    h.update(json.dumps({k: metadata.get(k) for k in _FILE_FIELDS}, sort_keys=True).encode())
    return h.hexdigest()


@dataclass(frozen=True, eq=False)
class AnchorKV:
    """Per-layer keys/values of a passage's anchors, ready to be read by the frozen decoder."""

    keys: torch.Tensor
    values: torch.Tensor
    positions: torch.Tensor
    num_tokens: int
    fingerprint: str
    content_hash: str
    rotary: Rotary
    start: int = 0

    def __post_init__(self) -> None:
        if self.keys.ndim != 4 or self.keys.shape != self.values.shape:
            raise CorruptKVError(f"keys/values must share a 4-D shape, got {tuple(self.keys.shape)} and {tuple(self.values.shape)}")
        if self.positions.ndim != 1 or self.positions.shape[0] != self.keys.shape[2]:
            raise CorruptKVError(f"{self.positions.shape} positions for {self.keys.shape[2]} anchors")
        if self.rotary.layer_type.shape[0] != self.keys.shape[0]:
            raise CorruptKVError("rotary table does not match the number of layers")

    # ---- sizes ---------------------------------------------------------------------------
    @property
    def num_anchors(self) -> int:
        return int(self.keys.shape[2])

    @property
    def num_layers(self) -> int:
        return int(self.keys.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes of the key/value tensors (what a KV cache would hold)."""
        return self.keys.nbytes + self.values.nbytes

    @property
    def end(self) -> int:
        """The last position the KV stands for."""
        return self.start + self.num_tokens

    def __repr__(self) -> str:
        return (
            f"AnchorKV(num_tokens={self.num_tokens}, num_anchors={self.num_anchors}, layers={self.num_layers}, "
            f"start={self.start}, nbytes={self.nbytes}, dtype={self.keys.dtype}, hash={self.content_hash[:12]})"
        )

    # ---- placement -----------------------------------------------------------------------
    def placed_at(self, offset: int) -> "AnchorKV":
        """A copy whose first token sits at position ``offset + 1`` (keys re-rotated exactly)."""
        if not isinstance(offset, int) or offset < 0:
            raise InvalidInputError(f"offset must be an int >= 0, got {offset!r}")
        delta = offset - self.start
        if delta == 0:
            return self
        return replace(self, keys=self.rotary.rotate(self.keys, delta), positions=self.positions + delta, start=offset)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "AnchorKV":
        return replace(self, keys=self.keys.to(device=device, dtype=dtype), values=self.values.to(device=device, dtype=dtype))

    @classmethod
    def concat(cls, kvs: Sequence["AnchorKV"]) -> "AnchorKV":
        """Join KVs into one that stands for their texts one after another (starting where the first starts)."""
        if not kvs:
            raise InvalidInputError("AnchorKV.concat needs at least one AnchorKV")
        first = kvs[0]
        for kv in kvs[1:]:
            if kv.fingerprint != first.fingerprint:
                raise KVMismatchError(
                    f"cannot concatenate KVs from different models/adapters ({first.fingerprint} vs {kv.fingerprint})"
                )
        placed, pos = [], first.start
        for kv in kvs:
            placed.append(kv.placed_at(pos))
            pos += kv.num_tokens
        return cls(
            keys=torch.cat([p.keys for p in placed], dim=2),
            values=torch.cat([p.values for p in placed], dim=2),
            positions=torch.cat([p.positions for p in placed]),
            num_tokens=pos - first.start,
            fingerprint=first.fingerprint,
            content_hash=hashlib.sha256("+".join(kv.content_hash for kv in kvs).encode()).hexdigest(),
            rotary=first.rotary,
            start=first.start,
        )

    # ---- serialization -------------------------------------------------------------------
    def checksum(self) -> str:
        return _digest([self.keys, self.values, self.positions])

    def to_bytes(self) -> bytes:
        tensors = {
            "keys": self.keys.detach().cpu().contiguous(),
            "values": self.values.detach().cpu().contiguous(),
            "positions": self.positions.detach().cpu().contiguous(),
            "rotary_inv_freq": self.rotary.inv_freq.detach().cpu().contiguous(),
            "rotary_layer_type": self.rotary.layer_type.detach().cpu().contiguous(),
        }
        metadata = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "num_tokens": str(self.num_tokens),
            "start": str(self.start),
            "fingerprint": self.fingerprint,
            "content_hash": self.content_hash,
        }
        metadata["checksum"] = _file_checksum(tensors, metadata)
        return st_save(tensors, metadata=metadata)

    @classmethod
    def from_bytes(cls, data: bytes, *, expected_fingerprint: str | None = None) -> "AnchorKV":
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise CorruptKVError(f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
        try:
            tensors = st_load(data)
            header_len = int.from_bytes(data[:8], "little")
            metadata = json.loads(data[8 : 8 + header_len]).get("__metadata__") or {}
        except (SafetensorError, ValueError, UnicodeDecodeError, json.JSONDecodeError, OverflowError) as exc:
            raise CorruptKVError(f"not a readable AnchorKV file: {exc}") from exc
        return cls._from_parts(tensors, metadata, expected_fingerprint)

    @classmethod
    def _from_parts(cls, tensors: dict, metadata: dict, expected_fingerprint: str | None) -> "AnchorKV":
        if metadata.get("format") != FORMAT_NAME:
            raise CorruptKVError(f"not an AnchorKV file (format={metadata.get('format')!r})")
        if metadata.get("version") != FORMAT_VERSION:
            raise KVMismatchError(
                f"AnchorKV file version {metadata.get('version')!r}; this sac-rag reads version {FORMAT_VERSION}: recompress the passage"
            )
        missing = {"keys", "values", "positions", "rotary_inv_freq", "rotary_layer_type"} - set(tensors)
        if missing:
            raise CorruptKVError(f"AnchorKV file lacks tensors {sorted(missing)}")
        try:
            num_tokens, start = int(metadata["num_tokens"]), int(metadata["start"])
            fingerprint, content_hash, checksum = metadata["fingerprint"], metadata["content_hash"], metadata["checksum"]
        except (KeyError, ValueError) as exc:
            raise CorruptKVError(f"AnchorKV metadata is incomplete: {exc}") from exc
        if _file_checksum(tensors, metadata) != checksum:
            raise CorruptKVError("AnchorKV checksum mismatch: the file was altered or damaged")
        if expected_fingerprint is not None and fingerprint != expected_fingerprint:
            raise KVMismatchError(
                f"this KV was compressed by model/adapter/config {fingerprint}, not {expected_fingerprint}: recompress it with this model"
            )
        rotary = Rotary(inv_freq=tensors["rotary_inv_freq"], layer_type=tensors["rotary_layer_type"])
        return cls(
            keys=tensors["keys"],
            values=tensors["values"],
            positions=tensors["positions"],
            num_tokens=num_tokens,
            fingerprint=fingerprint,
            content_hash=content_hash,
            rotary=rotary,
            start=start,
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically (temporary file, then rename): a crash never leaves half a file."""
        return write_atomic(path, self.to_bytes())

    @classmethod
    def load(cls, path: str | os.PathLike, *, expected_fingerprint: str | None = None) -> "AnchorKV":
        """Read a file written by :meth:`save`; raises :class:`CorruptKVError` if it is damaged."""
        return cls.from_bytes(Path(path).read_bytes(), expected_fingerprint=expected_fingerprint)
