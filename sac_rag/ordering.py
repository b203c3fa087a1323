"""Where each retrieved passage goes in the prompt.

The frozen decoder reads the passages' anchor KVs in prompt order, and the question comes after them. A small
causal reader leans on what sits nearest the question: on the results tables' questions with the gold passage
among 4 distractors in random order, SAC 5x answered better the later the gold passage sat (``docs/ordering.md``).
A retriever ranks its passages most relevant first, which puts its best guess furthest from the question, so this
module turns a ranking (or scores) into a prompt order.

It only orders: it knows ranks and scores, not texts, models, stores or frameworks. Because every passage is
compressed on its own and its KV re-positioned where it is placed (``AnchorKV.placed_at``), reordering costs
nothing: the stored KVs are reused whatever the order.
"""

from __future__ import annotations

import math
from typing import Sequence

from .errors import InvalidInputError

__all__ = ["ORDERS", "check_order", "prompt_order"]

#: ``as_given``: keep the order passages came in. ``most_relevant_last``: the most relevant passage nearest the
#: question (the default of the integrations). ``most_relevant_first``: a retriever's own order.
ORDERS = ("as_given", "most_relevant_last", "most_relevant_first")


def check_order(order: str) -> str:
    """``order`` if it names one of :data:`ORDERS`; else :class:`InvalidInputError`."""
    if order not in ORDERS:
        raise InvalidInputError(f"order must be one of {ORDERS}, got {order!r}")
    return order


def prompt_order(n: int, scores: Sequence[float] | None = None, order: str = "most_relevant_last") -> list[int]:
    """The indices of ``n`` passages in the order they go into the prompt.

    ``scores`` (higher: more relevant, one per passage) rank the passages; ties keep the order given. Without
    scores the passages are taken as already ranked, most relevant first (how retrievers return them)."""
    check_order(order)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise InvalidInputError(f"n must be a count of passages (an int >= 0), got {n!r}")
    if order == "as_given":
        return list(range(n))
    if scores is None:
        ranked = list(range(n))
    else:
        scores = list(scores)
        if len(scores) != n:
            raise InvalidInputError(f"{len(scores)} scores for {n} passages")
        for s in scores:
            if isinstance(s, bool) or not isinstance(s, (int, float)) or math.isnan(s):
                raise InvalidInputError(f"a relevance score must be a number, got {s!r}")
        ranked = sorted(range(n), key=lambda i: -scores[i])  # stable: ties keep the given order
    return ranked[::-1] if order == "most_relevant_last" else ranked
