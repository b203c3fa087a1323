"""Turning data into training items: which passages to compress, the prompt around them, the target.

Two tasks, as in the paper: LM continuation (compress the start of a text,
predict what follows; every target token counts) and QA (the gold passage
among distractors, each compressed on its own, in random order; loss on the
answer only). QA prompts come in several shapes: the reference template and
the prompts the framework integrations really send, so that what they send
is in distribution. A prompt is a list whose ints are passage indices (to be
replaced by their AnchorKV) and whose strings are text. No model here, only
text and random choices.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

from ..config import QA_TEMPLATE
from .data import QAExample

__all__ = ["TrainItem", "PROMPT_SHAPES", "qa_item", "lm_item", "build_prompt", "text_prompt"]

# Defaults of the frameworks we integrate with (LlamaIndex 0.14 text-QA; a LangChain-style "stuff" prompt).
_LLAMAINDEX_QA = (
    "Context information is below.\n---------------------\n{context}\n---------------------\n"
    "Given the context information and not prior knowledge, answer the query.\nQuery: {question}\nAnswer: "
)
_LANGCHAIN_QA = (
    "Use the following pieces of context to answer the question at the end. If you don't know the answer, "
    "just say that you don't know, don't try to make up an answer.\n\n{context}\n\nQuestion: {question}\nHelpful Answer:"
)
PROMPT_SHAPES = ("sac", "llamaindex", "langchain")


@dataclass(frozen=True)
class TrainItem:
    """Passages compressed once, and one or more (prompt, target) queries decoded from them.

    Several questions about the same passages share one encoder pass (the costly part on a CPU), so an item
    gives several answers' worth of signal for the price of one compression.
    """

    passages: tuple[str, ...]  # compressed independently
    queries: tuple[tuple[tuple, str], ...]  # (prompt: str text and int passage indices, target)
    kind: str  # "lm" or "qa"
    gold: int | None = None  # QA: the index in ``passages`` of the passage the answers come from


def build_prompt(shape: str, question: str, n: int) -> tuple:
    """The prompt layout for ``n`` compressed passages in a given shape."""
    if shape == "sac":
        return (*range(n), QA_TEMPLATE.format(question=question))
    template = {"llamaindex": _LLAMAINDEX_QA, "langchain": _LANGCHAIN_QA}[shape]
    before, after = template.split("{context}")
    parts: list = [before]
    for i in range(n):
        if i:
            parts.append("\n\n")
        parts.append(i)
    parts.append(after.format(question=question))
    return tuple(p for p in parts if p != "")


def qa_item(group: list[QAExample], rng: random.Random, pool: list[str], same_article: dict[str, list[str]], *,
            max_distractors: int, shapes: tuple[str, ...], max_questions: int = 4, gold_last: float = 0.0,
            place_rng: random.Random | None = None, hard: Sequence[str] | None = None,
            hard_rng: random.Random | None = None) -> TrainItem:
    """Questions about one gold passage (up to ``max_questions``), the passage among 0..``max_distractors``
    distractors (half from the same article when it has others), in random order, each question in a random
    prompt shape.

    With ``gold_last`` > 0 the gold passage is moved to the last place with that chance (the others keep their
    random order): the order the integrations send by default, the retriever's best passage nearest the question.
    That draw comes from ``place_rng`` (its own stream), so the questions, distractors and shapes stay those of
    the same seed without it.

    With ``hard`` (hard-negative candidates: passages near the questions that hold no answer, see
    ``sac_rag.negatives``) the item's distractors are drawn from those, with ``hard_rng``, instead of from the
    pool and the article: as many as before, fewer only where the candidates run short."""
    ex = group[0]
    gold = ex.passages[0]
    k = rng.randint(0, max_distractors) if max_distractors > 0 else 0
    distractors: list[str] = []
    siblings = [p for p in same_article.get(ex.article, []) if p != gold]
    rng.shuffle(siblings)
    k = min(k, len((set(pool) | set(siblings)) - {gold}))  # a small pool would never fill k distinct distractors
    if hard is not None:
        if hard_rng is None:
            raise ValueError("hard negatives need hard_rng, a stream of their own")
        candidates = [p for p in dict.fromkeys(hard) if p != gold]
        distractors = hard_rng.sample(candidates, min(k, len(candidates)))
    else:
        while len(distractors) < k:
            if siblings and rng.random() < 0.5:
                p = siblings.pop()
                if p not in distractors:  # it may already have been drawn from the pool
                    distractors.append(p)
            else:
                p = rng.choice(pool)
                if p != gold and p not in distractors:
                    distractors.append(p)
    passages = [gold, *distractors]
    rng.shuffle(passages)
    if gold_last > 0 and len(passages) > 1:
        if place_rng is None:
            raise ValueError("gold_last needs place_rng, a stream of its own")
        if place_rng.random() < gold_last:
            passages.remove(gold)
            passages.append(gold)
    queries = []
    for q in rng.sample(group, min(max_questions, len(group))):
        prompt = build_prompt(rng.choice(shapes), q.question, len(passages))
        last = prompt[-1]
        answer = q.answers[0]
        queries.append((prompt, answer if isinstance(last, str) and last[-1:].isspace() else " " + answer))
    return TrainItem(tuple(passages), tuple(queries), "qa", passages.index(gold))


def lm_item(text: str, rng: random.Random, *, min_frac: float = 0.5, max_frac: float = 0.8) -> TrainItem | None:
    """Compress a prefix of ``text`` (cut at a sentence or word end), predict the rest."""
    if len(text) < 200:
        return None
    cut = int(len(text) * rng.uniform(min_frac, max_frac))
    dot = text.rfind(". ", int(len(text) * min_frac * 0.8), cut)
    cut = dot + 1 if dot > 0 else text.rfind(" ", 0, cut)
    if cut <= 0:
        return None
    prefix, rest = text[:cut].strip(), text[cut:]
    if not rest.strip():
        return None
    return TrainItem((prefix,), (((0,), rest if rest.startswith(" ") else " " + rest),), "lm")


def text_prompt(prompt: tuple, passages: tuple[str, ...], template: str) -> str:
    """The same prompt with each passage as text (``template + passage``) instead of its KV: what a model
    reading the full text sees (the ``full-ft`` rival and the ``full`` baseline)."""
    parts: list[str] = []
    previous_was_passage = False
    for x in prompt:
        if isinstance(x, int):
            if previous_was_passage:
                parts.append("\n")
            parts.append(template + passages[x])
            previous_was_passage = True
        else:
            parts.append(x)
            previous_was_passage = False
    return "".join(parts)
