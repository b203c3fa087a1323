"""Hard negatives (``sac_rag.negatives``): nearest first, never the gold passage, never a passage with an answer."""

from __future__ import annotations

import numpy as np
import pytest

from sac_rag import InvalidInputError
from sac_rag.negatives import nearest_without_answer


class AxisEmbedder:
    """Each text maps to a fixed 2-d direction, so the cosine ranking is known without a model."""

    def __init__(self, angles: dict[str, float]) -> None:
        self.angles = angles
        self.calls = 0

    def encode(self, texts, normalize_embeddings=True, batch_size=64):
        self.calls += 1
        a = np.array([self.angles[t] for t in texts])
        return np.stack([np.cos(a), np.sin(a)], axis=1).astype(np.float32)


POOL = ["gold passage", "near, says Paris.", "near one", "middle one", "far one"]
ANGLES = {"where?": 0.0, "gold passage": 0.0, "near, says Paris.": 0.05, "near one": 0.1, "middle one": 0.8,
          "far one": 2.5, "other?": 2.5}


def test_nearest_first_without_gold_or_answer():
    emb = AxisEmbedder(ANGLES)
    [got] = nearest_without_answer(["where?"], [["paris"]], ["gold passage"], POOL, 2, embedder=emb)
    # "near, says Paris." is nearer but holds the answer (normalized: case and punctuation do not matter)
    assert got == ["near one", "middle one"]
    [few] = nearest_without_answer(["where?"], [["paris"]], ["gold passage"], POOL, 10, embedder=emb)
    assert few == ["near one", "middle one", "far one"]  # all that are eligible, nearest first
    # an answer matches whole words only: "par" is not a word of "near, says Paris."
    [words] = nearest_without_answer(["where?"], [["par"]], ["gold passage"], POOL, 1, embedder=emb)
    assert words == ["near, says Paris."]


def test_queries_run_in_parallel():
    emb = AxisEmbedder(ANGLES)
    got = nearest_without_answer(["where?", "other?"], [["x"], ["y"]], ["gold passage", "far one"], POOL, 1,
                                 embedder=emb)
    assert got == [["near, says Paris."], ["middle one"]]
    assert emb.calls == 2  # the pool once, the queries once
    assert nearest_without_answer(["where?"], [["x"]], ["gold passage"], POOL, 0, embedder=emb) == [[]]
    assert nearest_without_answer([], [], [], POOL, 3, embedder=emb) == []


def test_bad_input_is_a_typed_error():
    emb = AxisEmbedder(ANGLES)
    with pytest.raises(InvalidInputError, match="in parallel"):
        nearest_without_answer(["where?", "other?"], [["x"]], ["gold passage"], POOL, 1, embedder=emb)
    with pytest.raises(InvalidInputError, match="pool .* is empty"):
        nearest_without_answer(["where?"], [["x"]], ["gold passage"], [], 1, embedder=emb)
