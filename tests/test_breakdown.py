"""``sac-rag breakdown``: each answer sorted by where it went wrong, on hand-made answers with known categories."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from sac_rag.cli import main
from sac_rag.errors import InvalidInputError
from sac_rag.evaluation.breakdown import CATEGORIES, breakdown, categorize
from sac_rag.evaluation.metrics import score
from sac_rag.evaluation.qa import EvalConfig, select_examples

PARAGRAPHS = [
    ("The Rhine flows through Basel and Cologne before reaching the North Sea.", "Where does the Rhine end?", "the North Sea"),
    ("Marie Curie won the Nobel Prize in Physics in 1903 and in Chemistry in 1911.", "When did Curie win in Chemistry?", "1911"),
    ("The Eiffel Tower was finished in 1889 for the World's Fair in Paris.", "Why was the tower built?", "the World's Fair"),
    ("Penguins live mostly in the Southern Hemisphere, on Antarctica and nearby islands.", "Where do penguins live?", "Southern Hemisphere"),
    ("Mount Everest is 8,849 metres high and lies on the border of Nepal and China.", "How high is Everest?", "8,849 metres"),
    ("Bach wrote the Mass in B minor late in his life, in Leipzig.", "Where did Bach write the Mass?", "Leipzig"),
]


@pytest.fixture
def run(tmp_path):
    """Six questions, each with two passages; one answer per category, in the order of CATEGORIES."""
    data = tmp_path / "tiny-squad.json"
    data.write_text(json.dumps({"data": [{"title": "T", "paragraphs": [
        {"context": c, "qas": [{"id": f"q{i}", "question": q, "answers": [{"text": a, "answer_start": c.index(a)}]}]}
        for i, (c, q, a) in enumerate(PARAGRAPHS)]}]}))
    cfg = EvalConfig(data=str(data), method="sac", passages=2, limit=6)
    items = select_examples(cfg)
    records = []
    for category, (example, passages) in zip(CATEGORIES, items):
        gold = example.passages[0]
        other = next(p for p in passages if p != gold)
        prediction = {
            "exact": example.answers[0],
            "partial": example.answers[0] + " probably",
            "gold_passage": gold.split()[0] + " " + gold.split()[1],  # the passage's first two words: never the answer
            "distractor": other.split()[-2],  # a word of the other passage only
            "no_passage": "Zanzibar quokka",
            "empty": "the",  # nothing left after normalisation
        }[category]
        records.append({"id": example.id, "question": example.question, "answers": list(example.answers),
                        "prediction": prediction, **score(prediction, list(example.answers))})
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"config": asdict(cfg), "summary": {"n": 6}, "records": records}))
    return path, data, items


def test_each_answer_lands_in_its_category(run):
    path, _, items = run
    result = breakdown(path)
    assert result.n == 6 and result.method == "sac"
    assert result.counts == {c: 1 for c in CATEGORIES}
    assert [result.ids[c][0] for c in CATEGORIES] == [e.id for e, _ in items]
    assert result.share("exact") == pytest.approx(100 / 6)


def test_a_span_is_whole_words():
    # "ton" is inside "Washington" but is not a word of the passage
    record = {"em": 0.0, "f1": 0.0, "prediction": "ton"}
    assert categorize(record, "George Washington crossed the river.", ["George Washington crossed the river."]) == "no_passage"
    record["prediction"] = "The River!"  # normalised: "river", a word of the passage
    assert categorize(record, "George Washington crossed the river.", []) == "gold_passage"


def test_data_elsewhere_and_mismatches_are_refused_clearly(run, tmp_path):
    path, data, _ = run
    moved = tmp_path / "moved" / "tiny-squad.json"
    moved.parent.mkdir()
    data.rename(moved)
    with pytest.raises(InvalidInputError, match="is not here"):
        breakdown(path)
    assert breakdown(path, data=moved).counts["exact"] == 1
    broken = json.loads(path.read_text())
    broken["records"][2]["id"] = "someone-else"
    path.write_text(json.dumps(broken))
    with pytest.raises(InvalidInputError, match="answer 2 is for question 'someone-else'"):
        breakdown(path, data=moved)


def test_cli_breakdown(run, capsys):
    path, _, _ = run
    assert main(["breakdown", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"| {path} | sac | 6 | 1 (17%) | 1 (17%) | 1 (17%) | 1 (17%) | 1 (17%) | 1 (17%) |" in out
    assert main(["breakdown", str(path), "--json", "--ids"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["counts"]["no_passage"] == 1 and len(rows[0]["ids"]["no_passage"]) == 1


def test_grounded_runs_count_the_answers_taken_from_the_gold_passage(run, capsys):
    path, _, items = run
    assert breakdown(path).from_gold is None and breakdown(path).gold_share() is None  # free decoding: no spans
    doc = json.loads(path.read_text())
    # give each answer a span: the first three in the gold passage, the next two in the other one, the last none
    for i, ((example, passages), record) in enumerate(zip(items, doc["records"])):
        gold = passages.index(example.passages[0])
        if i < 5:
            record["span"] = {"passage": gold if i < 3 else 1 - gold, "start": 0, "end": 1, "text": "x"}
    path.write_text(json.dumps(doc))
    result = breakdown(path)
    assert (result.from_gold, result.spans) == (3, 5) and result.gold_share() == pytest.approx(60.0)
    assert main(["breakdown", str(path)]) == 0
    assert "| 3 of 5 (60%) |" in capsys.readouterr().out
    doc["records"][0]["span"]["passage"] = 7
    path.write_text(json.dumps(doc))
    with pytest.raises(InvalidInputError, match="span names passage 7, but the question had 2"):
        breakdown(path)


def test_f1_by_the_gold_passage_place(run, capsys):
    path, _, items = run
    result = breakdown(path)
    # the fixture's answers in CATEGORIES order score F1 1 (exact), above 0 (partial), then 0 for the rest
    records = json.loads(path.read_text())["records"]
    expected: dict[int, list[float]] = {}
    for (example, passages), record in zip(items, records):
        expected.setdefault(2 - passages.index(example.passages[0]), []).append(record["f1"])
    assert set(result.by_gold_place) == set(expected) and set(expected) <= {1, 2}
    for place, f1s in expected.items():
        assert result.by_gold_place[place] == {"n": len(f1s), "f1": pytest.approx(100 * sum(f1s) / len(f1s))}
    assert sum(c["n"] for c in result.by_gold_place.values()) == 6
    assert main(["breakdown", str(path)]) == 0
    out = capsys.readouterr().out
    assert "F1 by the gold passage's place" in out and "| place 1 | place 2 |" in out
    # one passage a question: no place to report, and no table
    doc = json.loads(path.read_text())
    doc["config"]["passages"] = 1
    path.write_text(json.dumps(doc))
    assert breakdown(path).by_gold_place == {}
    assert main(["breakdown", str(path)]) == 0
    assert "F1 by the gold passage's place" not in capsys.readouterr().out
