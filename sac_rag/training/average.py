"""Averaging SAC adapters trained from the same start: one adapter from several runs, with no model loaded.

Two runs on two cores, each on one thread, then one average, is data-parallel training without communication
(a "model soup" of the runs). For each LoRA module the average is taken over the runs' weight *updates*
``scale * B @ A`` (averaging A and B separately would add cross terms ``B1 @ A2``); the mean update has rank up to
the sum of the ranks, so it is cut back to ``rank`` by an SVD, done exactly through QR factors of the stacked
``B`` and ``A``, so only a small core matrix is decomposed. The anchor and ``[LM]`` embeddings are
averaged directly. The truncation error is measured and returned.

Weights may be negative as long as they sum to more than zero: ``weights=[1 - f, f]`` over adapters ``(start,
end)`` with ``f > 1`` *extrapolates*, moving ``f`` times as far as ``end`` went from ``start`` along the same line
(for an averaged round of local SGD, an outer learning rate above 1).

This module knows adapter files (:mod:`sac_rag.adapter`); it does not know models, training or data.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import torch

from ..adapter import read_adapter, write_adapter, weights_fingerprint
from ..errors import AdapterMismatchError, ConfigError, ModelLoadError

__all__ = ["AverageResult", "average_adapters"]


@dataclass(frozen=True)
class AverageResult:
    """What :func:`average_adapters` wrote and how much the rank cut lost."""

    path: Path
    sources: list[str]
    weights: list[float]
    rank: int
    modules: int
    #: per module, the Frobenius norm of what the rank cut dropped over the norm of the mean update
    truncation: dict[str, float] = field(repr=False)

    @property
    def max_truncation(self) -> float:
        return max(self.truncation.values(), default=0.0)

    @property
    def mean_truncation(self) -> float:
        return sum(self.truncation.values()) / max(1, len(self.truncation))

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "sources": self.sources, "weights": self.weights, "rank": self.rank,
                "modules": self.modules, "max_truncation": self.max_truncation,
                "mean_truncation": self.mean_truncation}


def _low_rank_mean(bs: list[torch.Tensor], as_: list[torch.Tensor], rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``sum_i B_i @ A_i`` (weights already folded into the B's) as ``B @ A`` of rank ``rank``, the best such
    approximation, and the relative Frobenius error of the cut. Works on the stacked factors: with
    ``B_cat = Qb Rb`` and ``A_cat^T = Qa Ra``, the product is ``Qb (Rb Ra^T) Qa^T`` and only the small core is
    decomposed."""
    b_cat = torch.cat(bs, dim=1).double()  # out x R
    a_cat = torch.cat(as_, dim=0).double()  # R x in
    qb, rb = torch.linalg.qr(b_cat)
    qa, ra = torch.linalg.qr(a_cat.T)
    u, s, vh = torch.linalg.svd(rb @ ra.T)
    k = min(rank, s.numel())
    total = float(s.square().sum())
    dropped = float(s[k:].square().sum())
    root = s[:k].sqrt()
    b = (qb @ u[:, :k]) * root  # out x k
    a = root[:, None] * (vh[:k] @ qa.T)  # k x in
    if k < rank:  # keep the requested shape: the missing directions are zero
        b = torch.cat([b, b.new_zeros(b.shape[0], rank - k)], dim=1)
        a = torch.cat([a, a.new_zeros(rank - k, a.shape[1])], dim=0)
    return b, a, (dropped / total) ** 0.5 if total > 0 else 0.0


def average_adapters(
    paths: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    weights: Sequence[float] | None = None,
    rank: int | None = None,
    info: dict[str, Any] | None = None,
) -> AverageResult:
    """Write the (weighted) average of ``paths`` to ``out`` and return what was done.

    All adapters must share the base model (fingerprint) and the whole :class:`~sac_rag.SACConfig`; averaging
    only makes sense for runs from one start (their updates live in one basin), which this cannot check.
    ``weights`` default to equal; they are normalised to sum to 1, which needs a positive sum; a negative weight
    extrapolates (see the module's docstring). ``rank`` defaults to the adapters' rank;
    any rank from 1 up is accepted (the sum of the ranks keeps the average exact). The output keeps the LoRA
    scaling ``alpha / rank`` of its sources (alpha grows with the rank when that stays an integer; otherwise the
    scale is folded into the matrices and alpha is kept)."""
    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        raise ConfigError(f"average_adapters needs at least two adapters, got {len(paths)}")
    if weights is None:
        weights = [1.0] * len(paths)
    weights = [float(w) for w in weights]
    total = sum(weights)
    if len(weights) != len(paths) or not all(math.isfinite(w) and w != 0 for w in weights) or not total > 0:
        raise ConfigError(f"weights must be {len(paths)} finite, non-zero numbers with a positive sum, got {weights}")
    weights = [w / total for w in weights]
    files = [read_adapter(p) for p in paths]
    first = files[0]
    for f in files[1:]:
        if f.base_fingerprint != first.base_fingerprint:
            raise AdapterMismatchError(f"{f.path} belongs to another base model than {first.path} "
                                       f"({f.base_fingerprint} vs {first.base_fingerprint})")
        if f.config != first.config:
            raise ConfigError(f"{f.path} has another config than {first.path}: {f.config} vs {first.config}")
        if (f.lora is None) != (first.lora is None) or (f.lora is not None and set(f.lora) != set(first.lora)):
            raise AdapterMismatchError(f"{f.path} and {first.path} hold different LoRA modules")
        for name, t in f.embeddings.items():
            if name not in first.embeddings or first.embeddings[name].shape != t.shape:
                raise AdapterMismatchError(f"{f.path}: embedding {name!r} does not match {first.path}")
    cfg = first.config
    rank = cfg.lora_rank if rank is None else rank
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < (1 if cfg.lora_rank else 0):
        raise ConfigError(f"rank must be an int >= 1, got {rank!r}")
    if cfg.lora_rank == 0:
        rank = 0

    embeddings = {name: sum(w * f.embeddings[name].double() for w, f in zip(weights, files)).float()
                  for name in first.embeddings}

    lora, truncation, peft_config = None, {}, None
    if first.lora is not None:
        if first.peft_config is None:
            raise ModelLoadError(f"{first.path}: the LoRA's adapter_config.json is missing")
        alpha_new = cfg.lora_alpha * rank / cfg.lora_rank
        alpha = int(alpha_new) if float(alpha_new).is_integer() else cfg.lora_alpha
        scale_in, scale_out = cfg.lora_alpha / cfg.lora_rank, alpha / rank
        lora = {}
        for a_name in sorted(k for k in first.lora if ".lora_A." in k):
            b_name = a_name.replace(".lora_A.", ".lora_B.")
            if b_name not in first.lora:
                raise AdapterMismatchError(f"{first.path}: {a_name} has no matching lora_B")
            bs = [w * scale_in * f.lora[b_name].double() for w, f in zip(weights, files)]
            as_ = [f.lora[a_name].double() for f in files]
            b, a, err = _low_rank_mean(bs, as_, rank)
            b = b / scale_out  # scale_out * B @ A is the mean update
            lora[a_name], lora[b_name] = a.float().contiguous(), b.float().contiguous()
            truncation[a_name.split(".lora_A.")[0]] = err
        leftover = set(first.lora) - set(lora)
        if leftover:
            raise AdapterMismatchError(f"{first.path}: LoRA tensors that are not A/B pairs: {sorted(leftover)[:3]}")
        cfg = replace(cfg, lora_rank=rank, lora_alpha=alpha)
        peft_config = {**first.peft_config, "r": rank, "lora_alpha": alpha}

    sources = [str(p) for p in paths]
    result = AverageResult(Path(out), sources, weights, rank, len(truncation), truncation)
    infos = [f.meta.get("info") or {} for f in files]
    items = [i.get("items") for i in infos]
    # the training behind the average: the runs' items, target tokens and seconds added up (what continued runs
    # and curves count), where every run recorded them
    totals = {k: sum(i[k] for i in infos) for k in ("items", "tokens", "elapsed_s")
              if all(isinstance(i.get(k), (int, float)) and not isinstance(i.get(k), bool) for i in infos)}
    record = {
        "trained": True,
        "stage": infos[0].get("stage", "qa"),
        "ratio": cfg.ratio,
        **totals,
        "recipe": f"the {'extrapolation (a negative weight)' if min(weights) < 0 else 'average'} of {len(files)} "
                  f"adapters' LoRA updates (cut back to rank {rank} by SVD) and embeddings",
        "averaged_from": [{"path": s, "weight": w, "items": i, "info": f.meta.get("info") or {},
                           "fingerprint": weights_fingerprint({**f.embeddings, **(f.lora or {})})}
                          for s, w, i, f in zip(sources, weights, items, files)],
        "rank": rank,
        "max_truncation": result.max_truncation,
        "mean_truncation": result.mean_truncation,
        **(info or {}),
    }
    write_adapter(out, peft_model=None, lora=(peft_config, lora) if lora is not None else None,
                         embeddings=embeddings, config=cfg, base_fingerprint=first.base_fingerprint,
                         base_model=first.meta.get("base_model", ""), info=record)
    return result
