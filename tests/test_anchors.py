"""Anchor selection: sub-contexts of 510 tokens and the reference code's anchor positions."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import passage_ids, reference_anchor_positions, text_of_length
from sac_rag import ConfigError, SACConfig
from sac_rag.anchors import anchor_offsets, plan_chunks


def planned_positions(cfg: SACConfig, n: int) -> list[int]:
    return [p for c in plan_chunks(cfg, n) for p in c.anchor_positions]


@pytest.mark.parametrize("ratio, expected", [(5, 102), (15, 34), (1, 510), (51, 10)])
def test_510_token_chunk_anchor_count(ratio, expected):
    [chunk] = plan_chunks(SACConfig(ratio=ratio), 510)
    assert (chunk.start, chunk.length) == (0, 510)
    assert len(chunk.anchors) == expected


def test_positions_of_the_first_chunk_at_ratio_5_and_15():
    # x1 = 1: anchors at 1 + (r-1)//2, then every r.
    assert planned_positions(SACConfig(ratio=5), 510)[:4] == [3, 8, 13, 18]
    assert planned_positions(SACConfig(ratio=5), 510)[-1] == 508
    assert planned_positions(SACConfig(ratio=15), 510)[:3] == [8, 23, 38]
    assert planned_positions(SACConfig(ratio=15), 510)[-1] == 503
    assert planned_positions(SACConfig(ratio=4), 20) == [2, 6, 10, 14, 18]


@pytest.mark.parametrize("n", [1, 2, 3, 7, 100, 509, 510, 511, 512, 513, 1019, 1020, 1021, 1022, 1530, 2000])
@pytest.mark.parametrize("ratio", [1, 2, 3, 5, 15, 51])
def test_uniform_positions_equal_reference_formula(n, ratio):
    assert planned_positions(SACConfig(ratio=ratio), n) == reference_anchor_positions(n, ratio)


@settings(max_examples=200, deadline=None, database=None, derandomize=True)
@given(n=st.integers(1, 3000), ratio=st.integers(1, 64), chunk=st.integers(64, 600))
def test_uniform_positions_property(n, ratio, chunk):
    cfg = SACConfig(ratio=ratio, chunk_tokens=chunk)
    chunks = plan_chunks(cfg, n)
    # Consecutive sub-contexts of `chunk` tokens covering 0..n-1 exactly.
    assert [c.start for c in chunks] == list(range(0, n, chunk))
    assert sum(c.length for c in chunks) == n
    assert all(c.length == chunk for c in chunks[:-1])
    positions = planned_positions(cfg, n)
    assert positions == reference_anchor_positions(n, ratio, chunk)
    assert positions == sorted(set(positions))
    assert 1 <= positions[0] and positions[-1] <= n
    assert all(len(c.anchors) <= cfg.anchor_slots for c in chunks)


def test_short_tail_falls_back_to_its_first_token():
    # 511 tokens at ratio 5: the second sub-context has one token (position 511), below x1 + 2.
    chunks = plan_chunks(SACConfig(ratio=5), 511)
    assert [c.length for c in chunks] == [510, 1]
    assert chunks[1].anchors == (0,)
    assert chunks[1].anchor_positions == (511,)


def test_segment_end_strategy():
    cfg = SACConfig(ratio=5, anchor_strategy="segment_end")
    assert anchor_offsets(cfg, 510) == tuple(range(4, 510, 5))
    assert anchor_offsets(cfg, 12) == (4, 9, 11), "a partial last segment ends at the last token"
    assert anchor_offsets(cfg, 3) == (2,)
    assert planned_positions(cfg, 1020)[:3] == [5, 10, 15]
    assert planned_positions(cfg, 1020)[102:104] == [515, 520]
    assert len(planned_positions(cfg, 1020)) == 204
    assert anchor_offsets(SACConfig(ratio=1, anchor_strategy="segment_end"), 4) == (0, 1, 2, 3)


def test_callable_strategy_is_used_per_sub_context():
    calls = []

    def first_and_last(chunk_len: int, ratio: int):
        calls.append((chunk_len, ratio))
        return [0, chunk_len - 1] if chunk_len > 1 else [0]

    cfg = SACConfig(ratio=7, anchor_strategy=first_and_last)
    assert planned_positions(cfg, 600) == [1, 510, 511, 600]
    assert calls == [(510, 7), (90, 7)]


@pytest.mark.parametrize(
    "bad",
    [
        lambda n, r: [],  # no anchors
        lambda n, r: [3, 1],  # not sorted
        lambda n, r: [1, 1, 2],  # duplicates
        lambda n, r: [-1, 2],  # negative
        lambda n, r: [0, n],  # past the end
        lambda n, r: range(0, n + 5),  # past the end
    ],
    ids=["empty", "unsorted", "duplicates", "negative", "past-end", "too-many"],
)
def test_callable_returning_bad_offsets_raises(bad):
    cfg = SACConfig(anchor_strategy=bad)
    with pytest.raises(ConfigError):
        plan_chunks(cfg, 40)


def test_compressed_positions_follow_the_plan(make_sac):
    """The KV's positions are the planned anchor positions of the tokenized passage (template included)."""
    sac = make_sac("llama", ratio=5)
    text = text_of_length(1100)
    kv = sac.compress(text)
    n = len(passage_ids(sac, text))
    assert kv.num_tokens == n == 1100 + len(sac.config.template)
    assert kv.positions.tolist() == reference_anchor_positions(n, 5)
    assert kv.num_anchors == len(reference_anchor_positions(n, 5))
    assert kv.start == 0
    assert kv.positions.dtype == torch.long


def test_compress_with_callable_strategy(make_sac):
    sac = make_sac("llama", ratio=3, anchor_strategy=lambda n, r: [n - 1])
    kv = sac.compress(text_of_length(600))
    n = 600 + len(sac.config.template)
    assert kv.positions.tolist() == [510, n]


def test_compress_with_bad_callable_raises(make_sac):
    sac = make_sac("llama", ratio=3, anchor_strategy=lambda n, r: [n])
    with pytest.raises(ConfigError):
        sac.compress("some text")
