"""Training items: QA items (gold among distractors, several questions, prompt shapes), LM items, the seeded stream."""

from __future__ import annotations

import itertools
import json
import random

import pytest

from sac_rag.config import QA_TEMPLATE
from sac_rag.training.data import QAExample
from sac_rag.training.tasks import PROMPT_SHAPES, TrainItem, build_prompt, lm_item, qa_item
from sac_rag.training.trainer import TrainConfig, item_stream

# Three articles of four passages; the gold passage P0 of article A has five questions about it.
SAME = {art: [f"{art} passage {i}." for i in range(4)] for art in "ABC"}
POOL = [p for ps in SAME.values() for p in ps]
GOLD = SAME["A"][0]
GROUP = [QAExample(f"q{i}", f"Question number {i}?", (f"answer {i}", f"alt {i}"), (GOLD,), "A", i) for i in range(5)]


def make(seed: int, group=GROUP, pool=POOL, same=SAME, **kw) -> TrainItem:
    kw = {"max_distractors": 4, "shapes": PROMPT_SHAPES, **kw}
    return qa_item(group, random.Random(seed), pool, same, **kw)


def question_of(prompt: tuple) -> str:
    text = "".join(x for x in prompt if isinstance(x, str))
    [q] = [g.question for g in GROUP if g.question in text]
    return q


@pytest.mark.parametrize("max_distractors", [0, 1, 4])
def test_qa_item_passages(max_distractors):
    counts = set()
    for seed in range(60):
        item = make(seed, max_distractors=max_distractors)
        assert item.kind == "qa"
        assert GOLD in item.passages
        assert len(set(item.passages)) == len(item.passages), item.passages  # no passage twice
        assert all(p in POOL for p in item.passages)
        counts.add(len(item.passages) - 1)
    assert counts <= set(range(max_distractors + 1))
    assert counts == set(range(max_distractors + 1))  # every count in range happens over 60 seeds


def test_qa_item_gold_position_varies():
    assert len({make(seed).passages.index(GOLD) for seed in range(60)}) > 1


def test_qa_item_records_where_the_gold_passage_went():
    for seed in range(30):
        item = make(seed)
        assert item.passages[item.gold] == GOLD
    assert lm_item("A sentence that goes on. " * 20, random.Random(0)).gold is None


def test_qa_item_gold_last_moves_only_the_gold_passage():
    for seed in range(40):
        plain = make(seed)
        always = make(seed, gold_last=1.0, place_rng=random.Random(seed))
        never = make(seed, gold_last=1e-12, place_rng=random.Random(seed))
        assert never == plain  # a chance that never fires changes nothing, the other draws included
        assert always.queries == plain.queries  # same questions and shapes: only the place differs
        assert always.passages[-1] == GOLD and always.gold == len(always.passages) - 1
        rest = [p for p in plain.passages if p != GOLD]
        assert list(always.passages[:-1]) == rest  # the distractors keep their order
    half = [make(seed, gold_last=0.5, place_rng=random.Random(seed)) for seed in range(200)]
    multi = [item for item in half if len(item.passages) > 1]
    last = sum(item.gold == len(item.passages) - 1 for item in multi) / len(multi)
    assert 0.5 < last < 0.85  # 0.5 moved + the random share of the other half (about 1/3 here)
    with pytest.raises(ValueError, match="place_rng"):
        make(0, gold_last=0.5, max_distractors=4, group=GROUP)  # no stream of its own to draw from


def test_qa_item_small_pool_does_not_hang():
    # Fewer distinct passages than max_distractors: as many distractors as there are, no endless search.
    same = {"A": [GOLD, "other"]}
    for seed in range(20):
        item = make(seed, pool=[GOLD, "other"], same=same, max_distractors=4)
        assert set(item.passages) <= {GOLD, "other"} and GOLD in item.passages
        assert len(set(item.passages)) == len(item.passages)
    only = make(0, pool=[GOLD], same={"A": [GOLD]}, max_distractors=4)
    assert only.passages == (GOLD,)


@pytest.mark.parametrize("max_questions", [1, 3, 5, 8])
def test_qa_item_queries(max_questions):
    for seed in range(20):
        item = make(seed, max_questions=max_questions)
        assert len(item.queries) == min(max_questions, len(GROUP))
        questions = [question_of(prompt) for prompt, _ in item.queries]
        assert len(set(questions)) == len(questions)  # distinct questions of the group
        n = len(item.passages)
        for prompt, target in item.queries:
            indices = [x for x in prompt if isinstance(x, int)]
            assert sorted(indices) == list(range(n))  # every passage exactly once
            assert all(isinstance(x, (int, str)) for x in prompt)
            ex = next(g for g in GROUP if g.question == question_of(prompt))
            last = prompt[-1]
            assert isinstance(last, str)
            if last[-1].isspace():
                assert target == ex.answers[0]
            else:
                assert target == " " + ex.answers[0]


def test_qa_item_uses_every_shape():
    seen = set()
    for seed in range(40):
        for prompt, _ in make(seed).queries:
            text = "".join(x for x in prompt if isinstance(x, str))
            if "Context information is below." in text:
                seen.add("llamaindex")
            elif "Use the following pieces of context" in text:
                seen.add("langchain")
            elif "### Question:" in text:
                seen.add("sac")
    assert seen == set(PROMPT_SHAPES)


@pytest.mark.parametrize("shape", PROMPT_SHAPES)
def test_qa_item_one_shape(shape):
    for seed in range(10):
        item = make(seed, shapes=(shape,))
        for prompt, _ in item.queries:
            assert prompt == build_prompt(shape, question_of(prompt), len(item.passages))


def test_qa_item_is_deterministic():
    assert make(3) == make(3)
    assert any(make(3) != make(s) for s in range(4, 10))


@pytest.mark.parametrize("n", [1, 2, 4])
def test_build_prompt_sac(n):
    prompt = build_prompt("sac", "Who?", n)
    assert prompt == (*range(n), QA_TEMPLATE.format(question="Who?"))


def _text_around(prompt: tuple) -> tuple[str, list[str], str]:
    """(text before the first index, text between consecutive indices, text after the last one)."""
    first = next(i for i, x in enumerate(prompt) if isinstance(x, int))
    last = max(i for i, x in enumerate(prompt) if isinstance(x, int))
    before = "".join(prompt[:first])
    between = []
    for a, b in itertools.pairwise([i for i, x in enumerate(prompt) if isinstance(x, int)]):
        between.append("".join(prompt[a + 1 : b]))
    return before, between, "".join(prompt[last + 1 :])


@pytest.mark.parametrize("n", [1, 3])
def test_build_prompt_llamaindex(n):
    from llama_index.core.prompts.default_prompts import DEFAULT_TEXT_QA_PROMPT_TMPL

    prompt = build_prompt("llamaindex", "Who wrote it?", n)
    assert [x for x in prompt if isinstance(x, int)] == list(range(n))
    before, between, after = _text_around(prompt)
    ref_before, ref_after = DEFAULT_TEXT_QA_PROMPT_TMPL.split("{context_str}")
    assert before == ref_before
    assert after == ref_after.format(query_str="Who wrote it?")
    assert between == ["\n\n"] * (n - 1)  # how LlamaIndex joins node texts


@pytest.mark.parametrize("n", [1, 3])
def test_build_prompt_langchain(n):
    from langchain_classic.chains.question_answering.stuff_prompt import PROMPT_SELECTOR

    prompt = build_prompt("langchain", "Who wrote it?", n)
    assert [x for x in prompt if isinstance(x, int)] == list(range(n))
    before, between, after = _text_around(prompt)
    ref_before, ref_after = PROMPT_SELECTOR.default_prompt.template.split("{context}")
    assert before == ref_before
    assert after == ref_after.format(question="Who wrote it?")
    assert between == ["\n\n"] * (n - 1)


def test_build_prompt_has_no_empty_text():
    for shape in PROMPT_SHAPES:
        for n in (1, 2, 5):
            assert all(x != "" for x in build_prompt(shape, "q?", n))


def test_build_prompt_unknown_shape():
    with pytest.raises(KeyError):
        build_prompt("haystack", "q?", 1)


LONG = " ".join(f"Sentence number {i} talks about topic {i % 7} at some length." for i in range(12))


def test_lm_item_reconstructs_the_text():
    for seed in range(30):
        item = lm_item(LONG, random.Random(seed))
        assert item is not None and item.kind == "lm"
        [prefix] = item.passages
        [(prompt, target)] = item.queries
        assert prompt == (0,)
        assert prefix and target.strip()
        assert target.startswith(" ")
        assert (prefix + target).split() == LONG.split()
        assert 0.5 * 0.8 * len(LONG) - 1 <= len(prefix) <= 0.8 * len(LONG)


def test_lm_item_cuts_at_sentence_or_word_ends():
    for seed in range(30):
        prefix = lm_item(LONG, random.Random(seed)).passages[0]
        assert LONG.startswith(prefix) and LONG[len(prefix)] == " "


def test_lm_item_without_sentences():
    text = " ".join(["word"] * 80)  # no ". " anywhere: cut at a space
    item = lm_item(text, random.Random(0))
    assert item is not None
    assert (item.passages[0] + item.queries[0][1]).split() == text.split()


def test_lm_item_short_or_unsplittable():
    assert lm_item("Too short. " * 5, random.Random(0)) is None
    assert lm_item("x" * 500, random.Random(0)) is None  # no word end to cut at


def write_squad(path, articles: int = 3, paragraphs: int = 3, questions: int = 2) -> None:
    data = {"data": [
        {"title": f"Article {a}", "paragraphs": [
            {"context": f"Article {a} paragraph {p} says that the value is {a * 10 + p}.", "qas": [
                {"id": f"{a}-{p}-{q}", "question": f"Question {q} about {a}/{p}?",
                 "answers": [{"text": str(a * 10 + p)}]}
                for q in range(questions)]}
            for p in range(paragraphs)]}
        for a in range(articles)]}
    path.write_text(json.dumps(data), encoding="utf-8")


def test_item_stream_qa_is_deterministic(tmp_path):
    path = tmp_path / "train.json"
    write_squad(path)
    cfg = TrainConfig(stage="qa", qa_data=(str(path),), out_dir=str(tmp_path / "run"), max_questions=2)
    first = list(itertools.islice(item_stream(cfg), 25))
    assert first == list(itertools.islice(item_stream(cfg), 25))
    other = TrainConfig(stage="qa", qa_data=(str(path),), out_dir=str(tmp_path / "run"), max_questions=2, seed=1)
    assert first != list(itertools.islice(item_stream(other), 25))
    # one item per gold passage per pass, all questions about it together (2 per paragraph here)
    assert all(len(item.queries) == 2 for item in first)
    first_pass = {"".join(x for x in prompt if isinstance(x, str)) for item in first[:9] for prompt, _ in item.queries}
    assert len({t.split("about ")[1].split("?")[0] for t in first_pass}) == 9  # each paragraph once in a pass
    for item in first:
        assert item.kind == "qa"
        paras = {p.split(" says")[0] for p in item.passages}
        for prompt, target in item.queries:
            text = "".join(x for x in prompt if isinstance(x, str))
            a, p = text.split("about ")[1].split("?")[0].split("/")
            assert f"Article {a} paragraph {p}" in paras  # the gold passage is there
            assert target.strip() == str(int(a) * 10 + int(p))


def gold_article(item) -> str:
    """The article of an item's gold passage (the one its questions are about)."""
    prompt, _ = item.queries[0]
    text = "".join(x for x in prompt if isinstance(x, str))
    return text.split("about ")[1].split("/")[0]


def test_weighted_sources_get_their_share_of_gold_passages(tmp_path):
    big, small = tmp_path / "big.json", tmp_path / "small.json"
    write_squad(big, articles=4, paragraphs=5)  # 20 gold passages, articles 0-3
    small_data = json.loads(big.read_text())
    small_data["data"] = small_data["data"][:1]
    for para in small_data["data"][0]["paragraphs"]:  # article 0's 5 passages, renamed to article 9
        para["context"] = para["context"].replace("Article 0", "Article 9")
        for qa in para["qas"]:
            qa["question"] = qa["question"].replace("about 0/", "about 9/")
    small.write_text(json.dumps(small_data))
    # unweighted, the small source would get 5 of 25 gold passages (20%); weighted 1:1, half of them
    cfg = TrainConfig(stage="qa", qa_data=(f"{big}@1", f"{small}:squad@1"), out_dir=str(tmp_path / "run"),
                      max_questions=2)
    items = list(itertools.islice(item_stream(cfg), 400))
    share = sum(gold_article(item) == "9" for item in items) / len(items)
    assert 0.42 < share < 0.58
    assert items[:30] == list(itertools.islice(item_stream(cfg), 30))  # seeded
    # each source goes through all its passages before repeating one
    small_golds = [item.queries[0][0] for item in items if gold_article(item) == "9"]
    firsts = {"".join(x for x in p if isinstance(x, str)).split("about ")[1].split("?")[0] for p in small_golds[:5]}
    assert len(firsts) == 5
    # distractors come from both sources
    passages = {p for item in items for p in item.passages}
    assert any(p.startswith("Article 9") for p in passages) and any(p.startswith("Article 1") for p in passages)
    # a weight of 3:1 gives the big source about 75%
    cfg3 = TrainConfig(stage="qa", qa_data=(f"{big}@3", f"{small}@1"), out_dir=str(tmp_path / "run"), max_questions=2)
    items3 = list(itertools.islice(item_stream(cfg3), 400))
    assert 0.67 < sum(gold_article(item) != "9" for item in items3) / 400 < 0.83


def test_mixture_reports_each_sources_share(tmp_path, capsys):
    from sac_rag.cli import main
    from sac_rag.training import mixture

    big, small = tmp_path / "big.json", tmp_path / "small.json"
    write_squad(big, articles=4, paragraphs=5, questions=2)  # 20 passages, 40 questions
    write_squad(small, articles=1, paragraphs=5, questions=1)  # 5 passages, 5 questions
    cfg = TrainConfig(stage="qa", qa_data=(str(big), str(small)), out_dir=str(tmp_path / "run"))
    plain = mixture(cfg)
    assert [(s.passages, s.questions) for s in plain] == [(20, 40), (5, 5)]
    assert [s.share for s in plain] == pytest.approx([0.8, 0.2])  # by passage count
    weighted = mixture(TrainConfig(stage="qa", qa_data=(f"{big}@1", f"{small}@3"), out_dir=str(tmp_path / "run")))
    assert [s.share for s in weighted] == pytest.approx([0.25, 0.75])
    assert weighted[1].spec == f"{small}@3"
    # sac-rag train prints it before training (here it then stops, with a typed error, on a base model that does
    # not exist)
    assert main(["train", "--qa-data", f"{big}@1", "--qa-data", f"{small}@3", "--model", str(tmp_path / "no-model"),
                 "--out", str(tmp_path / "run"), "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "ModelLoadError" in err
    assert " 25.0% of the gold passages  20 passages, 40 questions" in err and "75.0%" in err


def test_bad_source_weights_are_refused(tmp_path):
    from sac_rag import ConfigError
    from sac_rag.training.trainer import split_weight

    assert split_weight("data/nq.jsonl.gz:nq:even@0.45") == ("data/nq.jsonl.gz:nq:even", 0.45)
    assert split_weight("data/me@home/squad.json") == ("data/me@home/squad.json", None)  # not a number: a path
    with pytest.raises(ConfigError, match="every qa_data source a weight"):
        TrainConfig(stage="qa", qa_data=("a.json@2", "b.json"), out_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="positive"):
        TrainConfig(stage="qa", qa_data=("a.json@0", "b.json@1"), out_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="not text_data"):
        TrainConfig(stage="lm", text_data=("a.json@2",), out_dir=str(tmp_path))


def test_item_stream_gold_last_keeps_the_items(tmp_path):
    path = tmp_path / "train.json"
    write_squad(path)
    kw = {"stage": "qa", "qa_data": (str(path),), "out_dir": str(tmp_path / "run"), "max_questions": 2}
    plain = list(itertools.islice(item_stream(TrainConfig(**kw)), 60))
    last = list(itertools.islice(item_stream(TrainConfig(gold_last=1.0, **kw)), 60))
    assert [set(a.passages) for a in plain] == [set(b.passages) for b in last]
    assert [a.queries for a in plain] == [b.queries for b in last]
    assert all(b.gold == len(b.passages) - 1 for b in last)
    assert any(a.gold != len(a.passages) - 1 for a in plain)  # random order put it elsewhere at least once
    assert "gold last 1" in TrainConfig(gold_last=1.0, **kw).recipe()


def test_item_stream_lm_mix_puts_lm_items_between_the_same_qa_items(tmp_path):
    qa = tmp_path / "train.json"
    write_squad(qa)
    text = tmp_path / "text.jsonl"
    text.write_text("".join(json.dumps({"question": "q?", "answers": ["a"], "passages": [f"Doc {i}. " + LONG]}) + "\n"
                            for i in range(3)), encoding="utf-8")
    kw = {"stage": "qa", "qa_data": (str(qa),), "out_dir": str(tmp_path / "run"), "max_questions": 2}
    plain = list(itertools.islice(item_stream(TrainConfig(**kw)), 80))
    cfg = TrainConfig(lm_mix=0.5, text_data=(f"{text}:jsonl",), **kw)
    mixed = list(itertools.islice(item_stream(cfg), 80))
    assert mixed == list(itertools.islice(item_stream(cfg), 80))  # seeded
    lm = [m for m in mixed if m.kind == "lm"]
    qa_items = [m for m in mixed if m.kind == "qa"]
    assert 20 <= len(lm) <= 60  # about half
    assert qa_items == plain[: len(qa_items)]  # the QA items are the plain run's, in its order
    assert {m.passages[0][:6] for m in lm[:3]} == {"Doc 0.", "Doc 1.", "Doc 2."}  # each text once per pass
    assert "LM mix 0.5" in cfg.recipe()


def test_lm_mix_is_checked(tmp_path):
    from sac_rag import ConfigError

    for bad in (-0.1, 1.0, float("nan")):
        with pytest.raises(ConfigError, match="lm_mix"):
            TrainConfig(stage="qa", qa_data=("a.json",), out_dir=str(tmp_path), lm_mix=bad)
    with pytest.raises(ConfigError, match="QA stage of the sac method"):
        TrainConfig(stage="qa", method="full-ft", qa_data=("a.json",), out_dir=str(tmp_path), lm_mix=0.2)
    qa = tmp_path / "train.json"
    write_squad(qa)  # its paragraphs are shorter than an LM item needs
    cfg = TrainConfig(stage="qa", qa_data=(str(qa),), out_dir=str(tmp_path / "run"), lm_mix=0.9)
    with pytest.raises(ConfigError, match="long enough"):
        list(itertools.islice(item_stream(cfg), 50))


@pytest.mark.parametrize("field", ["gold_last", "hard_negatives"])
@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_item_chances_are_chances_for_the_qa_stage(tmp_path, field, bad):
    from sac_rag import ConfigError

    with pytest.raises(ConfigError, match=field):
        TrainConfig(stage="qa", qa_data=("a.json",), out_dir=str(tmp_path), **{field: bad})
    with pytest.raises(ConfigError, match="QA stage"):
        TrainConfig(stage="lm", text_data=("a.txt",), out_dir=str(tmp_path), **{field: 0.5})


def test_item_stream_lm_is_deterministic(tmp_path):
    path = tmp_path / "text.jsonl"
    rows = [{"question": "q?", "answers": ["a"], "passages": [f"Doc {i}. " + LONG]} for i in range(4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg = TrainConfig(stage="lm", text_data=(f"{path}:jsonl",), out_dir=str(tmp_path / "run"))
    items = list(itertools.islice(item_stream(cfg), 10))
    assert items == list(itertools.islice(item_stream(cfg), 10))
    assert all(item.kind == "lm" for item in items)
    assert {item.passages[0][:6] for item in items[:4]} == {f"Doc {i}." for i in range(4)}  # each text once per pass


def test_qa_item_hard_negatives_come_from_the_candidates():
    hard = [SAME["B"][1], GOLD, SAME["C"][2], SAME["C"][3]]  # the gold passage among them is skipped
    for seed in range(40):
        plain = make(seed)
        item = make(seed, hard=hard, hard_rng=random.Random(seed))
        distractors = [p for p in item.passages if p != GOLD]
        assert set(distractors) <= set(hard) - {GOLD}
        assert len(distractors) == min(len(plain.passages) - 1, 3)  # as many as before while the candidates last
        assert item.passages[item.gold] == GOLD
    with pytest.raises(ValueError, match="hard_rng"):
        make(0, hard=hard)


def test_item_stream_hard_negatives(tmp_path, monkeypatch):
    """With ``hard_negatives=1`` every distractor is one of the gold passage's candidates: near its questions
    (MiniLM) and holding none of their answers; with 0 the stream is the plain one. The candidates are kept in the
    cache directory, and a second stream on the same data reads them back without embedding anything."""
    from sac_rag.negatives import nearest_without_answer
    from sac_rag.training import trainer as trainer_mod

    monkeypatch.setenv("SAC_RAG_CACHE", str(tmp_path / "cache"))
    from sac_rag.training.data import load_examples

    path = tmp_path / "train.json"
    write_squad(path, articles=4)
    kw = {"stage": "qa", "qa_data": (str(path),), "out_dir": str(tmp_path / "run"), "max_questions": 2,
          "max_distractors": 2}
    plain = list(itertools.islice(item_stream(TrainConfig(**kw)), 24))
    assert plain == list(itertools.islice(item_stream(TrainConfig(hard_negatives=0.0, **kw)), 24))
    hard = list(itertools.islice(item_stream(TrainConfig(hard_negatives=1.0, **kw)), 24))
    examples = load_examples(str(path))
    pool = list(dict.fromkeys(e.passages[0] for e in examples))
    by_gold = {}
    for e in examples:
        by_gold.setdefault(e.passages[0], []).append(e)
    golds = list(by_gold)
    expected = nearest_without_answer([" ".join(e.question for e in by_gold[g]) for g in golds],
                                      [[a for e in by_gold[g] for a in e.answers] for g in golds], golds, pool, 4)
    candidates = dict(zip(golds, expected))
    with_distractors = 0
    for item in hard:
        gold = item.passages[item.gold]
        answers = {a for e in by_gold[gold] for a in e.answers}
        for p in item.passages:
            if p != gold:
                assert p in candidates[gold] and not any(a in p for a in answers)
        with_distractors += len(item.passages) > 1
    assert with_distractors > 8
    assert "hard negatives 1" in TrainConfig(hard_negatives=1.0, **kw).recipe()
    [entry] = (tmp_path / "cache" / "negatives").glob("*.json")

    def no_embedding(*args, **kwargs):
        raise AssertionError("the cached candidates should have been read back")

    monkeypatch.setattr(trainer_mod, "nearest_without_answer", no_embedding)
    assert list(itertools.islice(item_stream(TrainConfig(hard_negatives=1.0, **kw)), 24)) == hard
    entry.write_text("{not json")  # a damaged entry is recomputed, not trusted
    monkeypatch.setattr(trainer_mod, "nearest_without_answer", nearest_without_answer)
    assert list(itertools.islice(item_stream(TrainConfig(hard_negatives=1.0, **kw)), 24)) == hard
    assert len(json.loads(entry.read_text())) == len(golds)


def test_hard_negatives_need_distractors(tmp_path):
    from sac_rag import ConfigError

    with pytest.raises(ConfigError, match="max_distractors"):
        TrainConfig(stage="qa", qa_data=("a.json",), out_dir=str(tmp_path), hard_negatives=0.5, max_distractors=0)
