"""The QA evaluation harness behind ``sac-rag eval``: one method, one data file, per-item records + a summary.

Methods share the base model and the prompt template (DESIGN.md section 1):

* ``sac``         passages compressed (each on its own), then the question template;
* ``full``        the passages' text in the same template;
* ``truncate``    each passage cut to 1/ratio of its tokens;
* ``closed-book`` no passage at all;
* ``llmlingua``   the passages' text compressed by LLMLingua v1, scored by the same base model;
* ``full-ft``     the passages' text, read by the base model with a LoRA fine-tuned on the same data and budget
                  (``sac-rag train --method full-ft``): the strongest uncompressed rival.

``grounded`` decodes any method but closed-book so that the answer is a span of the question's passages
(:mod:`sac_rag.grounding`); the passages' text only filters next tokens, so the reached ratio is unchanged.

``shots`` puts solved examples (from the training split, bundled) before the
prompt, as text for text methods and compressed for ``sac``. Settings: the
gold passage alone (``passages=1``) or gold among distractors (``passages=k``,
other paragraphs of the file, seeded). Every record says how many context
tokens the method really read, so methods are compared at the ratio they
reached, not the one asked for. This module knows prompts and scoring; the
model work is SACModel's.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import MISSING, asdict, dataclass, fields
from importlib import resources
from pathlib import Path
from statistics import mean

import torch

from ..config import QA_TEMPLATE
from ..generation import SamplingParams, generate
from ..grounding import _generate_picked, generate_grounded
from ..negatives import nearest_without_answer
from ..store import KVStore, make_key
from ..errors import InvalidInputError
from ..ordering import prompt_order
from ..training.data import QAExample, load_examples
from .metrics import score

__all__ = ["EvalConfig", "METHODS", "evaluate", "select_examples"]

METHODS = ("sac", "full", "truncate", "closed-book", "llmlingua", "full-ft")
ORDERINGS = ("random", "relevance")
DISTRACTORS = ("random", "retrieved")


@dataclass
class EvalConfig:
    data: str
    fmt: str | None = None
    parity: str | None = None
    method: str = "sac"
    ratio: int = 5
    passages: int = 1
    limit: int | None = 200
    offset: int = 0  # skip this many shuffled questions (a disjoint slice for training curves)
    shots: int = 0
    seed: int = 0
    max_new_tokens: int = 24
    llmlingua_segment: int = 200  # LLMLingua's iterative_size; its default is 200 (see llmlingua_baseline)
    grounded: bool = False  # the answer must be a span of the question's passages (sac_rag.grounding)
    pick_passage: bool = False  # grounded, two-stage: pick a passage reading all, answer from it read alone
    # where the passages go: "random" (drawn with the seed), or "relevance": ranked by the embedded MiniLM's
    # cosine to the question, most relevant last (nearest the question; sac_rag.ordering), as a RAG chain would
    order: str = "random"
    # which distractors: "random" (drawn from the file's other passages with the seed), or "retrieved": the
    # passages the embedded MiniLM ranks nearest the question that hold none of its answers (hard negatives, as a
    # retriever's near misses are), so the gold passage need not rank first
    distractors: str = "random"
    # SAC: compress each distinct passage once per run and reuse its anchor KV for every later question that comes
    # with it (a KVStore in memory, 2 GiB, as a RAG service would): a gold passage serves all its questions. A
    # reused KV was compressed in a batch with other passages, so it equals a fresh one up to rounding; compare
    # runs made the same way
    reuse_kv: bool = False

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InvalidInputError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.passages < 1:
            raise InvalidInputError("passages must be >= 1")
        if self.llmlingua_segment < 1:
            raise InvalidInputError("llmlingua_segment must be >= 1")
        if self.grounded and self.method == "closed-book":
            raise InvalidInputError("grounded decoding takes the answer from the passages; closed-book has none")
        if self.pick_passage and not self.grounded:
            raise InvalidInputError("pick_passage is a way of grounded decoding: set grounded too")
        if self.pick_passage and self.method == "llmlingua":
            raise InvalidInputError("pick_passage reads each passage alone; llmlingua compresses them together")
        if self.order not in ORDERINGS:
            raise InvalidInputError(f"order must be one of {ORDERINGS}, got {self.order!r}")
        if self.distractors not in DISTRACTORS:
            raise InvalidInputError(f"distractors must be one of {DISTRACTORS}, got {self.distractors!r}")
        if self.reuse_kv and self.method != "sac":
            raise InvalidInputError("reuse_kv keeps SAC's anchor KVs; other methods compress nothing to reuse")


def select_examples(cfg: EvalConfig) -> list[tuple[QAExample, list[str]]]:
    """Shuffle with ``seed``, keep ``limit``, and give each question its passages (gold first drawn, then shuffled;
    with ``distractors="retrieved"`` the distractors are the nearest passages without an answer instead of random
    ones; with ``order="relevance"``, the same passages then ranked by the embedded retriever, most relevant last)."""
    examples = load_examples(cfg.data, cfg.fmt, parity=cfg.parity)
    rng = random.Random(cfg.seed)
    rng.shuffle(examples)
    examples = examples[cfg.offset :]
    examples = examples[: cfg.limit] if cfg.limit else examples
    pool = sorted({p for e in load_examples(cfg.data, cfg.fmt, parity=cfg.parity) for p in e.passages})
    nearest = _nearest_without_answer(examples, pool, cfg.passages - 1) if cfg.distractors == "retrieved" else None
    out = []
    for i, e in enumerate(examples):
        passages = [e.passages[0]] + (nearest[i] if nearest else [])
        while len(passages) < min(cfg.passages, len(pool)):
            p = rng.choice(pool)
            if p not in passages:
                passages.append(p)
        rng.shuffle(passages)
        out.append((e, passages))
    if cfg.order == "relevance":  # after the draws, so the questions and passages are those of the random order
        out = [(e, _by_relevance(e.question, passages)) for e, passages in out]
    return out


_EMBEDDER = None


def _embedder():
    global _EMBEDDER
    if _EMBEDDER is None:
        from ..retrieval import default_embedder

        _EMBEDDER = default_embedder()
    return _EMBEDDER


def _nearest_without_answer(examples: list[QAExample], pool: list[str], k: int) -> list[list[str]]:
    """For each example, the ``k`` passages of ``pool`` nearest its question that hold none of its answers
    (``sac_rag.negatives``: hard negatives), with the embedder this module ranks by."""
    if k < 1 or not examples:
        return [[] for _ in examples]
    return nearest_without_answer([e.question for e in examples], [e.answers for e in examples],
                                  [e.passages[0] for e in examples], pool, k, embedder=_embedder())


def _by_relevance(question: str, passages: list[str]) -> list[str]:
    if len(passages) < 2:
        return passages
    q = _embedder().encode([question], normalize_embeddings=True)
    p = _embedder().encode(passages, normalize_embeddings=True)
    scores = [float(x) for x in (p @ q.T).ravel()]
    return [passages[i] for i in prompt_order(len(passages), scores, "most_relevant_last")]


def _shots(n: int) -> list[dict]:
    data = json.loads(resources.files("sac_rag").joinpath("data/shots.json").read_text(encoding="utf-8"))
    if n > len(data["shots"]):
        raise InvalidInputError(f"at most {len(data['shots'])} shots are bundled")
    return data["shots"][:n]


_LLMLINGUA = None


def _llmlingua():
    global _LLMLINGUA
    if _LLMLINGUA is None:
        from .llmlingua_baseline import LLMLinguaCompressor

        _LLMLINGUA = LLMLinguaCompressor()
    return _LLMLINGUA


def _compressed(sac, passages: list[str], store: KVStore | None) -> list:
    """The passages' anchor KVs: all compressed now, or, with a ``store``, only those it does not hold yet."""
    if store is None:
        return sac.compress_batch(passages)
    keys = [make_key(sac.fingerprint, hashlib.sha256(p.encode("utf-8")).hexdigest()) for p in passages]
    kvs = {k: store.get(k, expected_fingerprint=sac.fingerprint) for k in dict.fromkeys(keys)}
    missing = [k for k, kv in kvs.items() if kv is None]
    if missing:
        texts = dict(zip(keys, passages))
        for k, kv in zip(missing, sac.compress_batch([texts[k] for k in missing])):
            store.put(k, kv)
            kvs[k] = kv
    return [kvs[k] for k in keys]


def _segments(sac, method: str, question: str, passages: list[str], shots: list[dict], ratio: int, segment: int = 200,
              store: KVStore | None = None):
    """Prompt segments for one question, and how many context tokens the method reads."""
    template = sac.config.template
    segs: list = []
    read = 0
    for shot in shots:  # solved examples, in the same layout as the question
        if method == "sac":
            segs += [*sac.compress_batch([shot["context"]]), QA_TEMPLATE.format(question=shot["question"]) + shot["answer"] + "\n\n"]
        elif method == "closed-book":
            segs.append(QA_TEMPLATE.format(question=shot["question"]).lstrip("\n") + shot["answer"] + "\n\n")
        else:
            segs.append(template + shot["context"] + QA_TEMPLATE.format(question=shot["question"]) + shot["answer"] + "\n\n")
    q = QA_TEMPLATE.format(question=question.strip())
    if method == "sac":
        kvs = _compressed(sac, passages, store)
        read = sum(kv.num_anchors for kv in kvs)
        return [*segs, *kvs, q], read
    if method == "closed-book":
        return [*segs, q.lstrip("\n")], 0
    if method == "llmlingua":
        passages = [_llmlingua().compress(passages, question, ratio, segment=segment)]
    texts = []
    for p in passages:
        ids = sac.tokenize(template + p)
        if method == "truncate":
            ids = ids[: max(1, len(ids) // ratio)]
        read += len(ids)
        texts.append(sac.tokenizer.decode(ids))
    return [*segs, "".join(t if t.endswith("\n") else t + "\n" for t in texts).rstrip("\n") + q], read


def _alone(sac, method: str, question: str, passages: list[str], shots: list[dict], ratio: int, joint: list):
    """For two-stage grounding: the prompt that reads each passage by itself, and the tokens each one reads. SAC
    reuses the passages' anchor KVs from ``joint`` (the last KVs before the question), so nothing is compressed
    twice."""
    if method == "sac":
        kvs, q = joint[-len(passages) - 1 : -1], joint[-1]
        return [[*joint[: -len(passages) - 1], kv, q] for kv in kvs], [kv.num_anchors for kv in kvs]
    prompts, reads = [], []
    for p in passages:
        segs, read = _segments(sac, method, question, [p], shots, ratio)
        prompts.append(segs)
        reads.append(read)
    return prompts, reads


def _adapter_of(sac) -> str:
    return str(sac.adapter_path) if sac.adapter_path else "untrained"


def run_precision(sac) -> dict[str, str]:
    """The dtype a run computed in and where: greedy answers can change between bf16 and fp32, so every summary
    says which it was (and, on a CPU, the instruction set torch used)."""
    out = {"dtype": str(sac.dtype).removeprefix("torch."), "device": sac.device.type}
    if sac.device.type == "cpu":
        out["cpu"] = torch.backends.cpu.get_cpu_capability()
    return out


def recorded_dtype(summary: dict) -> str:
    """The dtype an eval summary ran in; files written before it was recorded were all bf16."""
    return summary.get("dtype", "bfloat16")


def reusable_records(sac, cfg: EvalConfig, previous: str | Path) -> list[dict]:
    """The records of an earlier ``evaluate`` run that this run would reproduce: the same data, method, model,
    adapter and settings, differing at most in ``limit``. Questions and distractors are drawn in one seeded
    sequence, so the first n questions of a longer run are the n of a shorter one; decoding is greedy.
    Raises :class:`InvalidInputError` naming what differs."""
    try:
        prev = json.loads(Path(previous).read_text(encoding="utf-8"))
        prev_cfg, prev_summary, prev_records = prev["config"], prev["summary"], prev["records"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InvalidInputError(f"{previous} is not a sac-rag eval JSON: {exc}") from exc
    mine = asdict(cfg)
    # a setting added to EvalConfig after the earlier run was written: that run had its default
    prev_cfg = {**{f.name: f.default for f in fields(EvalConfig) if f.default is not MISSING}, **prev_cfg}
    differ = sorted(k for k in set(mine) | set(prev_cfg) if k != "limit" and mine.get(k) != prev_cfg.get(k))
    if prev.get("model") != sac.source:
        differ.append(f"model ({prev.get('model')!r} vs {sac.source!r})")
    if "fingerprint" in prev_summary:  # base model, adapter weights and SAC config, hashed: an adapter copied
        same_adapter = prev_summary["fingerprint"] == sac.fingerprint  # elsewhere (a candidate shipped) still counts
    else:  # files written before the fingerprint was recorded: the path and the adapter's record ("status" is prose)
        info = lambda d: {k: v for k, v in (d or {}).items() if k != "status"}  # noqa: E731
        same_adapter = (prev_summary.get("adapter") == _adapter_of(sac)
                        and info(prev_summary.get("adapter_info")) == info(sac.adapter_info))
    if not same_adapter:
        differ.append("adapter")
    mine_dtype = run_precision(sac)["dtype"]
    if recorded_dtype(prev_summary) != mine_dtype:
        differ.append(f"dtype ({recorded_dtype(prev_summary)} vs {mine_dtype})")
    if differ:
        raise InvalidInputError(f"cannot reuse {previous}: it differs from this run in {', '.join(differ)}")
    return prev_records


def evaluate(sac, cfg: EvalConfig, *, out: str | Path | None = None, progress: bool = True,
             reuse: str | Path | None = None) -> dict:
    """Run one method over the data; writes ``out`` (JSON: config, summary, per-item records) if given.

    ``reuse``: an earlier run's JSON (see :func:`reusable_records`); its records stand for the questions it
    already answered, and only the rest are run (extending a 200-question table to 500, say)."""
    items = select_examples(cfg)
    shots = _shots(cfg.shots)
    records: list[dict] = []
    if reuse is not None:
        for (e, _), r in zip(items, reusable_records(sac, cfg, reuse)):
            if r.get("id") != e.id:
                break
            records.append(r)
        items = items[len(records):]
    reused = len(records)
    store = KVStore(max_bytes=2 << 30) if cfg.reuse_kv else None
    iterator = items
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(items, desc=f"eval {cfg.method}", unit="q")
    for e, passages in iterator:
        t = time.perf_counter()
        method = "full" if cfg.method == "full-ft" else cfg.method
        segs, read = _segments(sac, method, e.question, passages, shots, cfg.ratio, cfg.llmlingua_segment, store)
        params = SamplingParams(cfg.max_new_tokens, stop=("\n",))
        ctx = sac._context()
        if cfg.method == "full-ft":  # the fine-tuned reader: generate with the LoRA on
            ctx.decoder_mode = sac.encoder_mode
        # grounded: the answer is a span of the passages' text (all methods take it from the same passages)
        if cfg.pick_passage:
            alone, alone_read = _alone(sac, method, e.question, passages, shots, cfg.ratio, segs)
            result, pick = _generate_picked(ctx, segs, passages, alone, params, 128, 0.0)
            read += alone_read[pick]  # the picked passage is read a second time, alone
        elif cfg.grounded:
            result = generate_grounded(ctx, segs, passages, params)
        else:
            result = generate(ctx, segs, params)
        pred = result.text.strip()
        context_tokens = sum(len(sac.tokenize(sac.config.template + p)) for p in passages)
        records.append({
            "id": e.id, "question": e.question, "answers": list(e.answers), "prediction": pred,
            "context_tokens": context_tokens, "read_tokens": read, "seconds": round(time.perf_counter() - t, 3),
            **score(pred, e.answers),
            **({"span": result.span.to_dict() if result.span else None} if cfg.grounded else {}),
        })
    ctx = sum(r["context_tokens"] for r in records)
    read = sum(r["read_tokens"] for r in records)
    summary = {
        "n": len(records),
        **{k: round(100 * mean(r[k] for r in records), 2) for k in ("em", "f1", "rouge1", "raw_em")},
        "reached_ratio": round(ctx / read, 2) if read else None,
        "seconds_per_q": round(mean(r["seconds"] for r in records), 3),
        "adapter": _adapter_of(sac),
        "adapter_info": sac.adapter_info,
        "fingerprint": sac.fingerprint,
        **run_precision(sac),
    }
    if reuse is not None:
        summary["reused"] = {"from": Path(reuse).name, "n": reused}
    if store is not None:
        st = store.stats()
        summary["kv_reuse"] = {"compressed": st.misses, "reused": st.hits}
    result = {"config": asdict(cfg), "model": sac.source, "summary": summary, "records": records}
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=1, ensure_ascii=False))
    return result
