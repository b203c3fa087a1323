"""Training data: every QA format read into QAExample, the even/odd split, format errors, passages per article."""

from __future__ import annotations

import gzip
import json

import pytest

from sac_rag import InvalidInputError
from sac_rag.training.data import FORMATS, QAExample, articles, load_examples, load_text


def write_squad(path) -> None:
    data = {
        "version": "1.1",
        "data": [
            {"title": "Rivers", "paragraphs": [
                {"context": "The Nile is long.", "qas": [
                    {"id": "q0", "question": "Which river is long?",
                     "answers": [{"text": "The Nile", "answer_start": 0}, {"text": "The Nile", "answer_start": 0},
                                 {"text": "Nile", "answer_start": 4}]},
                    {"id": "q1", "question": "How long is the Nile?",
                     "answers": [{"text": "long", "answer_start": 12}]},
                ]},
                {"context": "The Amazon is wide.", "qas": [
                    {"id": "q2", "question": "Which river is wide?",
                     "answers": [{"text": "The Amazon", "answer_start": 0}]},
                ]},
            ]},
            {"title": "Hills", "paragraphs": [
                {"context": "Rome has seven hills.", "qas": [
                    {"id": "q3", "question": "How many hills?", "answers": [{"text": "seven", "answer_start": 9}]},
                    {"id": "q4", "question": "Which city has hills?", "answers": [{"text": "Rome", "answer_start": 0}]},
                ]},
            ]},
        ],
    }
    path.write_text(json.dumps(data), encoding="utf-8")


NQ_ROWS = [
    {"question": "who wrote hamlet", "answers": ["Shakespeare", "William Shakespeare"],
     "ctxs": [{"id": "1", "title": "Hamlet", "text": "Hamlet is a play by Shakespeare.", "isgold": True},
              {"id": "2", "title": "Macbeth", "text": "Macbeth is another play.", "isgold": False}]},
    {"question": "capital of france", "answers": ["Paris"],
     "ctxs": [{"id": "3", "title": "Lyon", "text": "Lyon is a city.", "isgold": False},
              {"id": "4", "title": "Paris", "text": "Paris is the capital of France.", "isgold": True}]},
    {"question": "largest planet", "answers": ["Jupiter"],
     "ctxs": [{"id": "5", "title": "Jupiter", "text": "Jupiter is the largest planet."}]},  # no isgold flag: gold
]


def write_jsonl(path, rows) -> None:
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")


MRQA_ROWS = [
    {"header": {"dataset": "SQuAD", "split": "dev"}},
    {"id": "doc-a", "context": "Paris is in France.", "qas": [
        {"qid": "m0", "question": "Where is Paris?", "answers": ["France", "France"]},
        {"qid": "m1", "question": "What is in France?", "answers": [],
         "detected_answers": [{"text": "Paris", "char_spans": [[0, 4]]}]},
    ]},
    {"id": "doc-b", "context": "Berlin is in Germany.", "qas": [
        {"qid": "m2", "question": "Where is Berlin?", "answers": ["Germany"]},
    ]},
]

GENERIC_ROWS = [
    {"id": "g0", "question": "What colour is the sky?", "answers": ["blue"],
     "passages": ["The sky is blue.", "Grass is green."], "title": "Colours"},
    {"question": "What colour is grass?", "answers": ["green"], "context": "Grass is green."},
    {"id": 7, "question": "What colour is snow?", "answers": ["white"], "passages": ["Snow is white."]},
]


def test_formats_are_listed():
    assert set(FORMATS) == {"squad", "nq", "mrqa", "jsonl"}


def test_squad(tmp_path):
    path = tmp_path / "dev-v1.1.json"
    write_squad(path)
    examples = load_examples(path)  # format guessed from .json
    assert examples == load_examples(path, "squad")
    assert [e.id for e in examples] == ["q0", "q1", "q2", "q3", "q4"]
    assert [e.index for e in examples] == [0, 1, 2, 3, 4]
    first = examples[0]
    assert isinstance(first, QAExample)
    assert first.question == "Which river is long?"
    assert first.answers == ("The Nile", "Nile")  # duplicates dropped, order kept
    assert first.passages == ("The Nile is long.",)
    assert first.article == "Rivers"
    assert examples[2].passages == ("The Amazon is wide.",)
    assert examples[3].article == "Hills"


def test_squad_without_question_ids(tmp_path):
    # SQuAD files rebuilt from the SQuAD explorer's article pages carry no ids: each question gets a stable one
    path = tmp_path / "rebuilt.json"
    data = {"data": [{"title": "Rivers", "paragraphs": [
        {"context": "The Nile is long.", "qas": [{"question": "Which river?", "answers": [{"text": "The Nile"}]},
                                                 {"question": "How long?", "answers": [{"text": "long"}]}]},
        {"context": "The Amazon is wide.", "qas": [{"question": "Which is wide?", "answers": [{"text": "The Amazon"}]}]}]}]}
    path.write_text(json.dumps(data))
    examples = load_examples(path, "squad")
    assert [e.id for e in examples] == ["Rivers/0/0", "Rivers/0/1", "Rivers/1/0"]
    assert examples[2].answers == ("The Amazon",) and examples[2].passages == ("The Amazon is wide.",)


def test_squad_v2_drops_unanswerable_questions(tmp_path):
    path = tmp_path / "train-v2.0.json"
    data = {"version": "v2.0", "data": [{"title": "Moons", "paragraphs": [
        {"context": "Io orbits Jupiter.", "qas": [
            {"id": "a", "question": "What does Io orbit?", "answers": [{"text": "Jupiter", "answer_start": 10}],
             "is_impossible": False},
            {"id": "b", "question": "What does Io eat?", "answers": [], "is_impossible": True,
             "plausible_answers": [{"text": "Jupiter", "answer_start": 10}]},
        ]},
        {"context": "Titan has lakes.", "qas": [
            {"id": "c", "question": "What has no lakes?", "answers": [], "is_impossible": True},
        ]},
    ]}]}
    path.write_text(json.dumps(data), encoding="utf-8")
    examples = load_examples(path)
    assert [(e.id, e.answers, e.index) for e in examples] == [("a", ("Jupiter",), 0)]


@pytest.mark.parametrize("name", ["nq-open-oracle.jsonl", "nq-open-oracle.jsonl.gz"])
def test_nq(tmp_path, name):
    path = tmp_path / name
    write_jsonl(path, NQ_ROWS)
    examples = load_examples(path)  # "nq" in the name
    assert examples == load_examples(path, "nq")
    assert [e.id for e in examples] == ["nq-0", "nq-1", "nq-2"]
    assert [e.index for e in examples] == [0, 1, 2]
    assert examples[0].answers == ("Shakespeare", "William Shakespeare")
    assert examples[0].passages == ("Hamlet is a play by Shakespeare.",)  # only the gold context
    assert examples[0].article == "Hamlet"
    assert examples[1].passages == ("Paris is the capital of France.",)  # gold is not first in ctxs
    assert examples[1].article == "Paris"
    assert examples[2].passages == ("Jupiter is the largest planet.",)


def test_nq_guessed_from_ctxs(tmp_path):
    path = tmp_path / "oracle.jsonl"
    write_jsonl(path, NQ_ROWS)
    assert [e.id for e in load_examples(path)] == ["nq-0", "nq-1", "nq-2"]


def test_mrqa(tmp_path):
    path = tmp_path / "SQuAD-dev.jsonl.gz"
    write_jsonl(path, MRQA_ROWS)
    examples = load_examples(path)  # the header line gives the format away
    assert examples == load_examples(path, "mrqa")
    assert [e.id for e in examples] == ["m0", "m1", "m2"]
    assert [e.index for e in examples] == [0, 1, 2]
    assert examples[0].answers == ("France",)
    assert examples[1].answers == ("Paris",)  # from detected_answers when answers is empty
    assert examples[0].passages == examples[1].passages == ("Paris is in France.",)
    assert examples[0].article == "doc-a"
    assert examples[2].passages == ("Berlin is in Germany.",)
    assert examples[2].article == "doc-b"


def test_generic_jsonl(tmp_path):
    path = tmp_path / "generic.jsonl"
    write_jsonl(path, GENERIC_ROWS)
    examples = load_examples(path)
    assert examples == load_examples(path, "jsonl")
    assert [e.id for e in examples] == ["g0", "1", "7"]
    assert examples[0].passages == ("The sky is blue.", "Grass is green.")  # gold first, as given
    assert examples[0].article == "Colours"
    assert examples[1].passages == ("Grass is green.",)  # "context" instead of "passages"
    assert examples[1].answers == ("green",)
    assert examples[2].passages == ("Snow is white.",)


@pytest.mark.parametrize("parity, kept", [("even", [0, 2, 4]), ("odd", [1, 3])])
def test_parity_keeps_items_by_index(tmp_path, parity, kept):
    path = tmp_path / "dev.json"
    write_squad(path)
    everything = load_examples(path)
    part = load_examples(path, parity=parity)
    assert [e.index for e in part] == kept
    assert part == [everything[i] for i in kept]


def test_parity_halves_partition_the_file(tmp_path):
    path = tmp_path / "nq-dev.jsonl"
    write_jsonl(path, NQ_ROWS * 3)
    even, odd = load_examples(path, parity="even"), load_examples(path, parity="odd")
    assert {e.index for e in even} | {e.index for e in odd} == set(range(9))
    assert not {e.index for e in even} & {e.index for e in odd}
    assert all(e.index % 2 == 0 for e in even) and all(e.index % 2 == 1 for e in odd)


def test_unknown_format(tmp_path):
    path = tmp_path / "dev.json"
    write_squad(path)
    with pytest.raises(InvalidInputError, match="unknown data format"):
        load_examples(path, "csv")


def test_bad_parity(tmp_path):
    path = tmp_path / "dev.json"
    write_squad(path)
    with pytest.raises(InvalidInputError, match="parity"):
        load_examples(path, parity="third")


def test_articles_groups_distinct_passages(tmp_path):
    path = tmp_path / "dev.json"
    write_squad(path)
    groups = articles(load_examples(path))
    assert groups == {"Rivers": ["The Nile is long.", "The Amazon is wide."], "Hills": ["Rome has seven hills."]}


def test_articles_falls_back_to_the_id():
    examples = [
        QAExample("a", "q?", ("x",), ("P1", "P2")),
        QAExample("b", "q?", ("x",), ("P3",), article="T"),
        QAExample("c", "q?", ("x",), ("P3", "P1"), article="T"),
    ]
    assert articles(examples) == {"a": ["P1", "P2"], "T": ["P3", "P1"]}


def test_load_text(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("First paragraph\nstill first.\n\n\n  Second one.  \n\n\n", encoding="utf-8")
    assert load_text(path) == ["First paragraph\nstill first.", "Second one."]
