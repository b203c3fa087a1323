"""sac_rag.ordering: a ranking or scores turned into the prompt's order, and bad input refused."""

from __future__ import annotations

import math

import pytest

from sac_rag.errors import InvalidInputError
from sac_rag.ordering import ORDERS, prompt_order


def test_without_scores_the_input_is_a_ranking():
    assert prompt_order(4, None, "as_given") == [0, 1, 2, 3]
    assert prompt_order(4, None, "most_relevant_first") == [0, 1, 2, 3]
    assert prompt_order(4, None, "most_relevant_last") == [3, 2, 1, 0]
    assert prompt_order(4) == [3, 2, 1, 0]  # the default puts the retriever's first pick nearest the question


def test_scores_rank_the_passages():
    scores = [0.2, 0.9, 0.5, 0.1]
    assert prompt_order(4, scores, "most_relevant_first") == [1, 2, 0, 3]
    assert prompt_order(4, scores, "most_relevant_last") == [3, 0, 2, 1]
    assert prompt_order(4, scores, "as_given") == [0, 1, 2, 3]  # scores do not move anything here
    assert prompt_order(3, [1, 1, 2], "most_relevant_first") == [2, 0, 1]  # ties keep the given order
    assert prompt_order(0, [], "most_relevant_last") == []


def test_every_order_is_a_permutation():
    for order in ORDERS:
        assert sorted(prompt_order(6, [0.3, -1.0, 2.0, 0.3, 5.0, 0.0], order)) == list(range(6))


@pytest.mark.parametrize("args, match", [
    ((3, None, "best_last"), "order must be one of"),
    ((3, [0.1, 0.2], "most_relevant_last"), "2 scores for 3 passages"),
    ((2, [0.1, math.nan], "most_relevant_last"), "must be a number"),
    ((2, [0.1, "high"], "most_relevant_last"), "must be a number"),
    ((-1, None, "as_given"), "count of passages"),
    ((2.0, None, "as_given"), "count of passages"),
])
def test_bad_input_is_refused(args, match):
    with pytest.raises(InvalidInputError, match=match):
        prompt_order(*args)
