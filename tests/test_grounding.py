"""Span-grounded decoding: the span index (hand-checked cases) and decoding on tiny models."""

from __future__ import annotations

import pytest

from sac_rag import InvalidInputError
from sac_rag.evaluation.qa import EvalConfig, evaluate
from sac_rag.generation import SamplingParams, generate
from sac_rag.grounding import Span, SpanIndex, generate_grounded

QUESTION = "\nQuestion: who built the coil?\nAnswer:"
PASSAGES = [
    "The Tesla coil was built by Nikola Tesla in 1891. It cost $105 billion, they say.",
    "Worldvision Enterprises sold the  show\nto New   York stations.",
]


# ---- the span index -------------------------------------------------------------------------


def test_locate_finds_a_whole_word_span_with_its_offsets():
    index = SpanIndex(PASSAGES)
    span = index.locate("Nikola Tesla")
    assert span == Span(0, 28, 40, "Nikola Tesla")
    assert PASSAGES[0][span.start : span.end] == span.text


def test_matching_folds_case_and_whitespace_but_returns_the_passage_text():
    index = SpanIndex(PASSAGES)
    assert index.locate("  nikola tesla") == Span(0, 28, 40, "Nikola Tesla")
    span = index.locate("the show to new york")
    assert span.passage == 1 and span.text == "the  show\nto New   York"
    assert PASSAGES[1][span.start : span.end] == span.text


def test_spans_start_and_end_at_word_boundaries():
    index = SpanIndex(PASSAGES)
    assert index.is_prefix("Tes") and index.locate("Tes") is None  # the start of a word, not a whole one
    assert not index.is_prefix("esla")  # inside a word
    at = PASSAGES[0].index("105")
    assert index.locate("105 billion") == Span(0, at, at + 11, "105 billion")  # after '$': a boundary
    assert index.locate("$105 billion,").text == "$105 billion,"
    assert index.complete("Worldvis") == Span(1, 0, 11, "Worldvision")  # carried on to the word's end
    assert index.complete("Worldvision Ent").text == "Worldvision Enterprises"
    assert index.complete("Edison") is None and index.locate("") is None
    assert index.is_prefix("") and index.is_prefix("   ")


def test_first_occurrence_and_later_passages():
    index = SpanIndex(PASSAGES)
    assert index.locate("tesla") == Span(0, 4, 9, "Tesla")  # the first of two, in passage order
    assert index.locate("stations").passage == 1


def test_case_folding_keeps_offsets_when_lower_case_is_longer():
    passage = "İstanbul and Izmir"  # 'İ'.lower() is two characters
    span = SpanIndex([passage]).locate("izmir")
    assert passage[span.start : span.end] == "Izmir"


@pytest.mark.parametrize("bad", [[], "a passage, not a list", [""], ["ok", 3]])
def test_bad_passages_are_refused(bad):
    with pytest.raises(InvalidInputError):
        SpanIndex(bad)


# ---- decoding -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grounded_answers_are_spans_of_the_passages(make_sac, arch, seed):
    sac = make_sac(arch, seed=seed, ratio=5)
    kvs = sac.compress_batch(PASSAGES)
    for params in (SamplingParams(12, stop=("\n",)), SamplingParams(12, temperature=1.0, seed=seed)):
        out = generate_grounded(sac._context(), [*kvs, QUESTION], PASSAGES, params, top_k=259)
        assert out.finish_reason in ("eos", "stop", "length", "constraint")
        assert len(out.token_ids) <= 12 and out.usage.generated_tokens == len(out.token_ids)
        assert out.span is not None, "with the whole vocabulary to choose from, a span always starts"
        assert out.text == out.span.text == PASSAGES[out.span.passage][out.span.start : out.span.end]
        assert SpanIndex(PASSAGES).locate(out.text) == out.span  # whole words


def test_grounded_decoding_follows_the_model_when_its_answer_is_in_a_passage(make_sac, arch):
    """If the free greedy answer is itself a span, the constraint never bites: same tokens, same text."""
    checked = 0
    for seed in range(16):
        sac = make_sac(arch, seed=seed, ratio=5)
        kv = sac.compress(PASSAGES[0])
        free = sac.generate([kv, QUESTION], max_new_tokens=4)
        prefixes = [sac.tokenizer.decode(free.token_ids[:n]) for n in range(1, len(free.token_ids) + 1)]
        if free.finish_reason != "length" or any("\ufffd" in p for p in prefixes) or not prefixes[0].strip():
            continue  # a random model's bytes: keep the answers a passage holds as they decode
        answer = free.text.strip()
        passage = f"zz {answer} zz"
        out = sac.generate([kv, QUESTION], max_new_tokens=4, ground=[passage])
        assert out.token_ids == free.token_ids
        assert out.text == answer and out.span == Span(0, 3, 3 + len(answer), answer)
        checked += 1
    assert checked >= 2, "too few seeds gave a printable answer to check"


def test_grounded_output_differs_from_free_decoding_only_by_the_constraint(make_sac):
    """Each grounded token is the most likely one that keeps the answer a span (checked against the logits)."""
    sac = make_sac("llama", seed=3, ratio=5)
    kvs = sac.compress_batch(PASSAGES)
    ctx = sac._context()
    out = generate_grounded(ctx, [*kvs, QUESTION], PASSAGES, SamplingParams(8), top_k=259)
    index = SpanIndex(PASSAGES)
    for n, tok in enumerate(out.token_ids):
        prefix = out.token_ids[:n]
        free = generate(ctx, [*kvs, QUESTION, prefix], SamplingParams(1))  # one step of free decoding
        if free.token_ids == [tok]:
            continue
        # the free choice would have left the passages' spans: it is not a prefix of any
        text = sac.tokenizer.decode(prefix + free.token_ids, skip_special_tokens=True)
        assert not free.token_ids or not index.is_prefix(text) or not text.strip()


def test_answer_grounded_and_its_errors(make_sac):
    sac = make_sac("gemma3", seed=0, ratio=5)
    out = sac.answer("who built the coil?", PASSAGES, grounded=True, max_new_tokens=8)
    assert out.span is None or PASSAGES[out.span.passage][out.span.start : out.span.end] == out.text
    with pytest.raises(InvalidInputError):
        sac.answer("who built the coil?", [], grounded=True)
    with pytest.raises(InvalidInputError):
        generate_grounded(sac._context(), [QUESTION], PASSAGES, SamplingParams(4), top_k=0)
    assert sac.answer("who built the coil?", PASSAGES, max_new_tokens=8).span is None  # free decoding: no span


def test_eval_grounded_records_spans(make_sac, tmp_path, train_data):
    sac = make_sac("llama", seed=0, ratio=5)
    for method in ("sac", "full"):
        cfg = EvalConfig(data=train_data, method=method, limit=3, grounded=True, max_new_tokens=6)
        result = evaluate(sac, cfg, out=tmp_path / f"{method}.json", progress=False)
        assert result["config"]["grounded"] is True
        for r in result["records"]:
            span = r["span"]
            assert span is None or span["text"] == r["prediction"]
    plain = evaluate(sac, EvalConfig(data=train_data, method="sac", limit=2, max_new_tokens=6), progress=False)
    assert all("span" not in r for r in plain["records"])
    with pytest.raises(InvalidInputError):
        EvalConfig(data=train_data, method="closed-book", grounded=True)


# ---- end_bias -------------------------------------------------------------------------------


def test_end_bias_zero_is_the_default_rule(make_sac, arch):
    sac = make_sac(arch, seed=1, ratio=5)
    kvs = sac.compress_batch(PASSAGES)
    segs = [*kvs, QUESTION]
    params = SamplingParams(10, stop=("\n",))
    a = generate_grounded(sac._context(), segs, PASSAGES, params, top_k=259)
    b = generate_grounded(sac._context(), segs, PASSAGES, params, top_k=259, end_bias=0.0)
    assert a == b


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_end_bias_moves_where_the_answer_ends(make_sac, seed):
    """A huge positive bias ends the answer at the first word end where any ending token is in the top k (here
    the whole vocabulary); a huge negative one never lets the model's own choice end it."""
    sac = make_sac("gemma3", seed=seed, ratio=5)
    kvs = sac.compress_batch(PASSAGES)
    segs = [*kvs, QUESTION]
    ctx = sac._context()
    index = SpanIndex(PASSAGES)
    soon = generate_grounded(ctx, segs, PASSAGES, SamplingParams(10), top_k=259, end_bias=1e9)
    if soon.finish_reason == "eos":
        prefixes = [sac.tokenizer.decode(soon.token_ids[:n], skip_special_tokens=True) for n in range(1, len(soon.token_ids))]
        assert all(index.locate(p) is None for p in prefixes), "it could have ended earlier"
        assert index.locate(sac.tokenizer.decode(soon.token_ids, skip_special_tokens=True)) is not None
    else:  # no prefix was ever a whole span before the limit or the constraint
        assert soon.finish_reason in ("length", "constraint")
    late = generate_grounded(ctx, segs, PASSAGES, SamplingParams(10), top_k=259, end_bias=-1e9)
    assert late.finish_reason in ("length", "constraint")  # no stop strings: only the model's choice could end it
    assert len(late.token_ids) >= len(soon.token_ids)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "1", True, None])
def test_bad_end_bias_is_refused(make_sac, bad):
    sac = make_sac("llama", seed=0, ratio=5)
    with pytest.raises(InvalidInputError):
        generate_grounded(sac._context(), [QUESTION], PASSAGES, SamplingParams(4), end_bias=bad)


# ---- two-stage: pick a passage, answer from it alone ------------------------------------------


def test_picked_passage_answer_equals_grounding_that_passage_alone(make_sac, arch):
    """Stage two is exactly grounded decoding of the picked passage read alone; stage one picks the passage with
    the most first-step probability of span starts (checked against the masses computed here)."""
    from sac_rag.generation import _prefill
    from sac_rag.grounding import _passage_masses, generate_grounded_picked

    sac = make_sac(arch, seed=2, ratio=5)
    kvs = sac.compress_batch(PASSAGES)
    ctx = sac._context()
    params = SamplingParams(8, stop=("\n",))
    alone = [[kv, QUESTION] for kv in kvs]
    out = generate_grounded_picked(ctx, [*kvs, QUESTION], PASSAGES, alone, params, top_k=259)
    with __import__("torch").inference_mode():
        masses = _passage_masses(ctx, _prefill(ctx, [*kvs, QUESTION]), SpanIndex(PASSAGES), 259)
    pick = max(range(len(PASSAGES)), key=lambda i: masses[i])
    single = generate_grounded(ctx, alone[pick], [PASSAGES[pick]], params, top_k=259)
    assert out.token_ids == single.token_ids and out.text == single.text
    if out.span is not None:
        assert out.span.passage == pick and PASSAGES[pick][out.span.start : out.span.end] == out.text
    both = sum(kv.num_anchors for kv in kvs) + kvs[pick].num_anchors
    assert out.usage.anchors == both  # the picked passage is read twice and counted twice
    assert out.usage.context_tokens == sum(kv.num_tokens for kv in kvs)
    with pytest.raises(InvalidInputError):
        generate_grounded_picked(ctx, [*kvs, QUESTION], PASSAGES, alone[:1], params)


def test_eval_pick_passage_counts_the_second_read(make_sac, tmp_path, train_data):
    sac = make_sac("llama", seed=0, ratio=5)
    for method in ("sac", "full"):
        cfg = EvalConfig(data=train_data, method=method, passages=3, limit=3, grounded=True, pick_passage=True,
                         max_new_tokens=6)
        picked = evaluate(sac, cfg, progress=False)
        joint = evaluate(sac, EvalConfig(data=train_data, method=method, passages=3, limit=3, grounded=True,
                                         max_new_tokens=6), progress=False)
        for a, b in zip(picked["records"], joint["records"]):
            assert a["read_tokens"] > b["read_tokens"]  # the joint read plus one passage alone
            assert a["span"] is None or a["span"]["text"] == a["prediction"]
        assert picked["summary"]["reached_ratio"] < joint["summary"]["reached_ratio"]
    with pytest.raises(InvalidInputError):
        EvalConfig(data=train_data, pick_passage=True)  # not grounded
    with pytest.raises(InvalidInputError):
        EvalConfig(data=train_data, method="llmlingua", grounded=True, pick_passage=True)


def test_end_bias_on_the_model_api(make_sac):
    sac = make_sac("gemma3", seed=1, ratio=5)
    kvs = sac.compress_batch(PASSAGES)
    direct = generate_grounded(sac._context(), [*kvs, QUESTION], PASSAGES, SamplingParams(10), end_bias=-1e9)
    via = sac.generate([*kvs, QUESTION], max_new_tokens=10, ground=PASSAGES, end_bias=-1e9)
    assert via.token_ids == direct.token_ids and via.span == direct.span
    pieces = list(sac.stream([*kvs, QUESTION], max_new_tokens=10, ground=PASSAGES, end_bias=-1e9))
    assert "".join(p.text for p in pieces) == direct.text
    answered = sac.answer("who built the coil?", PASSAGES, grounded=True, end_bias=-1.0, max_new_tokens=8)
    assert answered.span is None or answered.text == PASSAGES[answered.span.passage][answered.span.start : answered.span.end]
    with pytest.raises(InvalidInputError):
        sac.generate([*kvs, QUESTION], max_new_tokens=4, end_bias=-1.0)  # free decoding has no end_bias
    with pytest.raises(InvalidInputError):
        sac.answer("who built the coil?", PASSAGES, end_bias=-1.0)


def test_answer_places_passages_by_relevance_and_reports_the_callers_index(make_sac):
    """``answer(order="most_relevant_last")`` answers as if the caller had put the passages in that order itself,
    and its span indexes the passages as the caller gave them."""
    sac = make_sac("llama", seed=3, ratio=5)
    q = "who built the coil?"
    ranked_first = [PASSAGES[0], PASSAGES[1]]  # best first, as a retriever returns them
    placed = sac.answer(q, ranked_first, grounded=True, order="most_relevant_last", max_new_tokens=8)
    by_hand = sac.answer(q, ranked_first[::-1], grounded=True, max_new_tokens=8)
    assert placed.token_ids == by_hand.token_ids and placed.text == by_hand.text
    assert placed.span is not None and by_hand.span is not None  # seed 3 answers with a span
    assert placed.span.passage == 1 - by_hand.span.passage  # back in the caller's numbering
    assert ranked_first[placed.span.passage][placed.span.start : placed.span.end] == placed.text
    scored = sac.answer(q, ranked_first[::-1], grounded=True, order="most_relevant_last", scores=[0.2, 0.9],
                        max_new_tokens=8)  # scores rank them: the same prompt as above
    assert scored.token_ids == by_hand.token_ids
    assert sac.answer(q, ranked_first, order="as_given", max_new_tokens=8).token_ids == \
        sac.answer(q, ranked_first, max_new_tokens=8).token_ids
    with pytest.raises(InvalidInputError, match="order"):
        sac.answer(q, ranked_first, order="best_last")
    with pytest.raises(InvalidInputError, match="scores"):
        sac.answer(q, ranked_first, order="most_relevant_last", scores=[1.0])
