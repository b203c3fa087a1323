"""Hard negatives: the passages a dense retriever ranks nearest a query that hold none of its answers.

A RAG chain hands the model its retriever's nearest passages, and the ones that are not the gold passage are
the hardest distractors there are: on topic, and silent on the question. Evaluation draws them with
``--distractors retrieved``, training with ``hard_negatives`` (``sac_rag.training``); both come here so that
they mean the same thing. A passage "holds an answer" when the answer, SQuAD-normalized, appears in it as whole
words. This module embeds and ranks text; it knows nothing about SAC, prompts or models other than the embedder.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .errors import InvalidInputError
from .evaluation.metrics import normalize

__all__ = ["nearest_without_answer"]


def nearest_without_answer(queries: Sequence[str], answers: Sequence[Sequence[str]], golds: Sequence[str],
                           pool: Sequence[str], k: int, *, embedder=None, batch_size: int = 64) -> list[list[str]]:
    """For each query, the ``k`` passages of ``pool`` nearest it (cosine of normalized embeddings, nearest first),
    leaving out its gold passage and every passage that holds one of its answers.

    ``queries``, ``answers`` and ``golds`` run in parallel (one entry per query). Fewer than ``k`` come back only
    where the pool has fewer eligible passages. ``embedder`` is a SentenceTransformer (default: the embedded
    all-MiniLM-L6-v2); the pool is embedded once per call."""
    if not (len(queries) == len(answers) == len(golds)):
        raise InvalidInputError(f"queries, answers and golds must run in parallel, got {len(queries)}, "
                                f"{len(answers)} and {len(golds)}")
    if k < 1 or not queries:
        return [[] for _ in queries]
    if not pool:
        raise InvalidInputError("the pool to draw hard negatives from is empty")
    if embedder is None:
        from .retrieval import default_embedder

        embedder = default_embedder()
    vectors = np.asarray(embedder.encode(list(pool), normalize_embeddings=True, batch_size=batch_size))
    q = np.asarray(embedder.encode(list(queries), normalize_embeddings=True, batch_size=batch_size))
    normalized: dict[int, str] = {}  # pool index -> its normalized text, filled as candidates come up
    out: list[list[str]] = []
    for i, scores in enumerate(q @ vectors.T):
        wanted = [f" {a} " for a in (normalize(x) for x in answers[i]) if a]
        chosen: list[str] = []
        for j in scores.argsort()[::-1]:
            j = int(j)
            if pool[j] == golds[i]:
                continue
            if j not in normalized:
                normalized[j] = f" {normalize(pool[j])} "
            if any(a in normalized[j] for a in wanted):
                continue
            chosen.append(pool[j])
            if len(chosen) == k:
                break
        out.append(chosen)
    return out
