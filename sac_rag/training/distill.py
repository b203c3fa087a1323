"""Distillation targets computed once and stored: a teacher's top-k next-token log-probabilities at the answer
positions of a training run's item stream, written to a directory of safetensors shards, read back item by item.

A full-ft teacher (the base model with a LoRA trained to read the text) costs 2-2.5x a student step when it runs
live beside the student on a CPU. Its answer distributions do not depend on the ratio, the learning rate or the
student's state, only on the items, so one pass serves every run over the same stream: 5x and 15x, several seeds
of the student, a run resumed in the next session, or a student that follows a teacher writing in another process.

Each answer position keeps the teacher's ``k`` most probable tokens and their log-probabilities; the mass outside
them is one more bucket, so the stored distribution is exact on a coarser vocabulary (the k tokens + "the rest")
and :func:`sparse_kl` is the KL divergence on that vocabulary (never more than the full KL). The manifest records
what the stream depends on (data, seed, item shapes, tokenizer) and the teacher's fingerprint; a run whose stream
differs is refused, and each stored query keeps its target tokens, which the student checks against its own.

This module knows the file format, the teacher pass over a stream and the loss on stored targets; not the training
loop (:mod:`.trainer`, which imports it).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch
from safetensors.torch import load_file, save

from ..errors import ConfigError, CorruptFileError
from ..fileio import write_atomic

if TYPE_CHECKING:  # the trainer imports this module; the teacher pass imports the trainer when it runs
    from .tasks import TrainItem
    from .trainer import TrainConfig

logger = logging.getLogger(__name__)

__all__ = ["StoredQuery", "TeacherLogits", "shared_prefix_rows", "sparse_kl", "stream_signature", "write_teacher_logits"]

FORMAT = 1
MANIFEST = "manifest.json"
# the TrainConfig fields that decide a QA run's item stream and its targets (what the stored logits belong to)
STREAM_FIELDS = ("stage", "qa_data", "base_model", "seed", "gold_last", "hard_negatives", "max_distractors",
                 "max_questions", "prompt_shapes", "max_passage_tokens", "max_target_tokens")


@dataclass(frozen=True)
class StoredQuery:
    """One query's stored teacher distribution: ``targets`` ``[T]`` (the answer tokens it was teacher-forced on,
    end-of-sequence included), ``ids`` ``[T, k]`` (the teacher's top-k tokens at each answer position) and
    ``logprobs`` ``[T, k]`` (their log-probabilities under the full softmax, float32)."""

    targets: torch.Tensor
    ids: torch.Tensor
    logprobs: torch.Tensor


def stream_signature(cfg: "TrainConfig") -> dict:
    """What a run's item stream and targets depend on: the stream fields of ``cfg``, with each data file's size (so
    a file rewritten under the same name does not pass for the old one)."""
    from .trainer import split_weight

    sig = {}
    for name in STREAM_FIELDS:
        value = getattr(cfg, name)
        sig[name] = list(value) if isinstance(value, tuple) else value
    files = []
    for spec in cfg.qa_data:
        path = split_weight(spec)[0].partition(":")[0]
        files.append(os.path.getsize(path) if os.path.exists(path) else None)
    sig["qa_data_bytes"] = files
    return sig


def sparse_kl(student_logits: torch.Tensor, ids: torch.Tensor, logprobs: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) per position on the vocabulary coarsened to the teacher's top-k tokens plus one bucket
    for the rest, averaged over positions. ``student_logits`` ``[T, vocab]``; ``ids``, ``logprobs`` ``[T, k]`` (the
    teacher's top-k tokens and log-probabilities). With k = vocab it is the full KL (:func:`.trainer.distill_kl`);
    with fewer it is never more than that (merging tokens cannot make two distributions further apart)."""
    s = torch.log_softmax(student_logits.float(), dim=-1)
    s_top = s.gather(-1, ids.long())
    t_top = logprobs.float()
    p_top = t_top.exp()
    kl = (p_top * (t_top - s_top)).sum(-1)
    p_rest = (1.0 - p_top.sum(-1)).clamp_min(0.0)
    # log of the student's mass outside the teacher's top-k; clamped where the top-k take (almost) all of it
    q_rest = -torch.expm1(torch.logsumexp(s_top, dim=-1))
    kl = kl + torch.xlogy(p_rest, p_rest) - p_rest * torch.log(q_rest.clamp_min(1e-12))
    return kl.mean()


class TeacherLogits:
    """A directory of stored teacher distributions for the first ``len(self)`` items of one stream.

    ``store.check(cfg)`` raises :class:`ConfigError` if a run's stream is not the one stored;
    ``store.item(i, wait_s)`` returns item ``i``'s queries, waiting up to ``wait_s`` seconds for a teacher that is
    still writing (another process), then raising :class:`ConfigError`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not (self.path / MANIFEST).is_file():
            raise ConfigError(f"{self.path} holds no stored teacher logits (no {MANIFEST}; write them with "
                              "`sac-rag teacher-logits`)")
        self._shard: tuple[int, list[list[StoredQuery]]] | None = None
        self.reload()

    def reload(self) -> None:
        try:
            self.manifest = json.loads((self.path / MANIFEST).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise CorruptFileError(f"{self.path / MANIFEST} cannot be read: {e}") from e
        if self.manifest.get("format") != FORMAT:
            raise ConfigError(f"{self.path}: teacher-logits format {self.manifest.get('format')!r}, this sac-rag "
                              f"reads {FORMAT}")

    def __len__(self) -> int:
        return sum(s["items"] for s in self.manifest["shards"])

    @property
    def k(self) -> int:
        return int(self.manifest["k"])

    def check(self, cfg: "TrainConfig") -> None:
        mine, theirs = stream_signature(cfg), self.manifest["stream"]
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        if diff:
            raise ConfigError(f"the teacher logits in {self.path} were written for another item stream; they differ "
                              f"in {', '.join(f'{k} ({theirs.get(k)!r} stored, {mine.get(k)!r} here)' for k in diff)}")

    def item(self, index: int, wait_s: float = 0.0) -> list[StoredQuery]:
        deadline = time.monotonic() + wait_s
        if index >= len(self) and wait_s > 0:
            logger.warning("sac-rag: waiting up to %.0f s for the teacher logits of item %d (%s holds %d items)",
                           wait_s, index, self.path, len(self))
        while index >= len(self):
            if time.monotonic() >= deadline:
                raise ConfigError(f"{self.path} holds teacher logits for {len(self)} items; item {index} is not "
                                  "there (write more with `sac-rag teacher-logits --items`, or wait for the writer)")
            time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
            self.reload()
        start = 0
        for shard in self.manifest["shards"]:
            if index < start + shard["items"]:
                if self._shard is None or self._shard[0] != start:
                    self._shard = (start, _read_shard(self.path / shard["file"]))
                return self._shard[1][index - start]
            start += shard["items"]
        raise AssertionError("unreachable: index checked against len(self)")


def _read_shard(path: Path) -> list[list[StoredQuery]]:
    try:
        t = load_file(path)
        queries_per_item, lengths = t["queries_per_item"].tolist(), t["query_lengths"].tolist()
        ids, logprobs, targets = t["ids"], t["logprobs"].float(), t["targets"]
    except Exception as e:  # safetensors raises its own errors for truncated or foreign files
        raise CorruptFileError(f"teacher-logits shard {path} cannot be read: {e}") from e
    if sum(queries_per_item) != len(lengths) or sum(lengths) != ids.shape[0] or ids.shape != logprobs.shape:
        raise CorruptFileError(f"teacher-logits shard {path} is inconsistent (its counts and tensors disagree)")
    items, at, q = [], 0, 0
    for n in queries_per_item:
        queries = []
        for length in lengths[q: q + n]:
            queries.append(StoredQuery(targets[at: at + length], ids[at: at + length], logprobs[at: at + length]))
            at += length
        q += n
        items.append(queries)
    return items


def _write_shard(path: Path, items: list[list[StoredQuery]]) -> None:
    queries = [q for item in items for q in item]
    tensors = {
        "queries_per_item": torch.tensor([len(item) for item in items], dtype=torch.int64),
        "query_lengths": torch.tensor([q.targets.numel() for q in queries], dtype=torch.int64),
        "targets": torch.cat([q.targets for q in queries]).to(torch.int32),
        "ids": torch.cat([q.ids for q in queries]).to(torch.int32).contiguous(),
        "logprobs": torch.cat([q.logprobs for q in queries]).to(torch.float16).contiguous(),
    }
    write_atomic(path, save(tensors))


@torch.no_grad()
def shared_prefix_rows(teacher, item: "TrainItem", targets: list[list[int]], cfg: "TrainConfig") -> list[torch.Tensor]:
    """What ``trainer._teacher_rows(teacher, item, targets, keep, cfg, lora=True)`` returns (each query's logits at
    its ``len(target) + 1`` last positions, the teacher reading the passages as text with its LoRA on), with the
    text that queries of one prompt shape share (the header and every passage before the question) run once.

    Queries whose prompts differ only after the passages are grouped; their common token prefix is fed once and
    each query's own tokens (question, answer) continue from a copy of its cache. An item's questions are read
    through 1.8 shapes on average, so this feeds the passages about 40% fewer times; positions, masks and tokens are
    those of the batched pass, so the logits agree up to rounding (tested)."""
    import copy

    from ..generation import _State, _embed_run, _forward, _prefill, _tokenize
    from .tasks import text_prompt
    from .trainer import _teacher_context, _text_passages

    ctx = _teacher_context(teacher, lora=True)
    passages = _text_passages(teacher, item, cfg)
    ids = []
    for (prompt, _), target in zip(item.queries, targets):
        text = _tokenize(ctx, text_prompt(prompt, passages, teacher.config.template))
        if ctx.bos_id is not None and text[:1] == [ctx.bos_id]:
            text = text[1:]  # as the decoder's layout does: one BOS, at position 0
        ids.append(text + list(target))
    keep = [len(t) + 1 for t in targets]
    offset = 1 if ctx.bos_id is not None else 0  # position of a prompt's first text token
    groups: dict[tuple, list[int]] = {}
    for q, (prompt, _) in enumerate(item.queries):
        groups.setdefault(tuple(prompt[:-1]), []).append(q)  # the same layout up to the question
    rows: list[torch.Tensor | None] = [None] * len(ids)
    device = teacher.model.get_input_embeddings().weight.device
    for members in groups.values():
        first = ids[members[0]]
        common = min(len(ids[q]) - keep[q] for q in members)
        for q in members[1:]:
            common = next((i for i, (a, b) in enumerate(zip(first[:common], ids[q])) if a != b), common)
        if len(members) == 1 or common == 0:
            for q in members:
                logits = _prefill(ctx, [ids[q]], keep=keep[q]).logits
                rows[q] = logits[None] if logits.dim() == 1 else logits
            continue
        shared = _prefill(ctx, [first[:common]], keep=0)
        for q in members:
            state = _State(cache=copy.deepcopy(shared.cache), pos=shared.pos, pinned=shared.pinned, next_pos=0)
            rest = ids[q][common:]
            pos = list(range(offset + common, offset + len(ids[q])))
            _forward(ctx, state, _embed_run(ctx, rest, device)[None], pos, keep=keep[q])
            rows[q] = state.logits[None] if state.logits.dim() == 1 else state.logits
    return rows


def write_teacher_logits(cfg: "TrainConfig", out: str | os.PathLike, items: int, k: int = 32, shard_items: int = 25,
                         on_shard: Callable[[int], None] | None = None) -> TeacherLogits:
    """Run ``cfg``'s teacher (``cfg.teacher_adapter``, a full-ft adapter) over the first ``items`` items of ``cfg``'s
    stream and store its top-``k`` log-probabilities at every answer position under ``out``, ``shard_items`` items a
    shard. Resumes: a directory that already holds the same stream and teacher goes on from its last shard. Each
    shard, then the manifest, is written atomically, so a student reading the directory meanwhile (or a killed pass)
    sees whole shards only. ``on_shard`` is called with the number of items stored after each shard."""
    from .trainer import _load_teacher, _target_ids, item_stream

    if cfg.stage != "qa" or not cfg.teacher_adapter:
        raise ConfigError("teacher logits are written for the QA stage with a teacher_adapter (a full-ft adapter)")
    if items < 1 or k < 1 or shard_items < 1:
        raise ConfigError(f"items, k and shard_items must be >= 1, got {items}, {k}, {shard_items}")
    out = Path(out)
    teacher = _load_teacher(cfg)
    manifest = {"format": FORMAT, "stream": stream_signature(cfg), "k": k,
                "teacher": {"adapter": str(cfg.teacher_adapter), "fingerprint": teacher.fingerprint},
                "dtype": cfg.dtype, "shards": []}
    if (out / MANIFEST).is_file():
        store = TeacherLogits(out)
        store.check(cfg)
        old = store.manifest
        if old["k"] != k or old["teacher"]["fingerprint"] != teacher.fingerprint:
            raise ConfigError(f"{out} holds logits of another teacher or k (k={old['k']}, teacher "
                              f"{old['teacher']['fingerprint']}); write to a new directory")
        manifest["shards"] = old["shards"]
    done = sum(s["items"] for s in manifest["shards"])
    if done >= items:
        return TeacherLogits(out)
    stream = item_stream(cfg)
    for _ in range(done):
        next(stream)
    while done < items:
        batch: list[list[StoredQuery]] = []
        for _ in range(min(shard_items, items - done)):
            item = next(stream)
            targets = [_target_ids(teacher, text, cfg, item.kind) for _, text in item.queries]
            rows = shared_prefix_rows(teacher, item, targets, cfg)
            queries = []
            for row, target in zip(rows, targets):
                logp = torch.log_softmax(row[:-1].float(), dim=-1)
                top = torch.topk(logp, min(k, logp.shape[-1]), dim=-1)
                queries.append(StoredQuery(torch.tensor(target), top.indices, top.values))
            batch.append(queries)
        name = f"shard-{done:07d}.safetensors"
        _write_shard(out / name, batch)
        manifest["shards"].append({"file": name, "items": len(batch)})
        done += len(batch)
        write_atomic(out / MANIFEST, json.dumps(manifest, indent=1).encode())
        if on_shard is not None:
            on_shard(done)
    return TeacherLogits(out)
