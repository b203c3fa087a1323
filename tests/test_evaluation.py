"""Evaluation: metrics on hand-made strings, the QA harness on a tiny model for every method, the report."""

from __future__ import annotations

import json
from dataclasses import replace
from importlib import resources

import pytest
import torch

from sac_rag import SACModel
from sac_rag.errors import InvalidInputError
from sac_rag.evaluation.metrics import exact_match, f1, normalize, raw_exact_match, rouge1_f, score
from sac_rag.evaluation.qa import METHODS, EvalConfig, evaluate, select_examples
from sac_rag.evaluation.report import write_report
from sac_rag.testing import tiny_sac


# ---- metrics -------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("The Nile!", "nile"),
    ("  A  cat, an   owl and THE dog. ", "cat owl and dog"),
    ("Theatre anthem", "theatre anthem"),  # articles only as whole words
    ("", ""),
    ("U.S.A.", "usa"),
])
def test_normalize(text, expected):
    assert normalize(text) == expected


def test_exact_match():
    assert exact_match("the Nile.", ["Nile"]) == 1.0
    assert exact_match("Nile river", ["Nile"]) == 0.0
    assert exact_match("Amazon", ["Nile", "the amazon", "Congo"]) == 1.0  # any gold answer
    assert exact_match("", ["Nile"]) == 0.0


def test_f1():
    assert f1("Nile", ["Nile"]) == 1.0
    assert f1("red", ["blue"]) == 0.0
    # pred "nile river" vs gold "nile": precision 1/2, recall 1 -> 2/3
    assert f1("the Nile river", ["Nile"]) == pytest.approx(2 / 3)
    # max over golds: "long river" vs "river" = 2/3, vs "long river nile" = 0.8
    assert f1("long river", ["river", "the long river Nile", "lake"]) == pytest.approx(0.8)
    # tokens count with multiplicity: 2 common of 3 predicted and 3 gold
    assert f1("cat cat dog", ["cat dog dog"]) == pytest.approx(2 / 3)
    assert f1("", [""]) == 1.0 and f1("", ["x"]) == 0.0 and f1("the", ["x"]) == 0.0


def test_rouge1_f_and_raw_exact_match():
    assert rouge1_f("The Nile", "the nile") == 1.0  # lower-cased, articles kept
    assert rouge1_f("Nile river", "Nile") == pytest.approx(2 / 3)
    assert rouge1_f("the Nile river", "Nile") == pytest.approx(0.5)  # unlike SQuAD F1, "the" counts: P 1/3, R 1
    assert rouge1_f("1,000 km", "1000 km") == pytest.approx(0.4)  # "1", "000", "km" against "1000", "km": P 1/3, R 1/2
    assert rouge1_f("", "Nile") == 0.0
    assert raw_exact_match(" Nile ", "Nile") == 1.0  # stripped
    assert raw_exact_match("nile", "Nile") == 0.0  # not normalized
    assert raw_exact_match("The Nile", "Nile") == 0.0


def test_score_uses_first_gold_for_paper_metrics():
    s = score("Congo", ["Nile", "Congo"])
    assert s == {"em": 1.0, "f1": 1.0, "rouge1": 0.0, "raw_em": 0.0}
    assert score("Nile", ["Nile", "Congo"]) == {"em": 1.0, "f1": 1.0, "rouge1": 1.0, "raw_em": 1.0}


# ---- the QA harness ------------------------------------------------------------------------------
def write_squad(path) -> None:
    subjects = ["the river", "the mountain", "the lake", "the forest", "the desert"]
    paragraphs = []
    for i, s in enumerate(subjects):
        answer = f"{i + 3} hundred kilometres"
        paragraphs.append({
            "context": f"Paragraph {i}: {s.capitalize()} is {answer} away from the old town, past the hills.",
            "qas": [{"id": f"p{i}", "question": f"How far away is {s}?", "answers": [{"text": answer}]}],
        })
    data = {"data": [{"title": "Places", "paragraphs": paragraphs}]}
    path.write_text(json.dumps(data), encoding="utf-8")


@pytest.fixture(scope="module")
def sac():
    return tiny_sac(ratio=5, lora_rank=4)


@pytest.fixture(scope="module")
def squad(tmp_path_factory):
    path = tmp_path_factory.mktemp("eval") / "dev.json"
    write_squad(path)
    return str(path)


RECORD_KEYS = {"id", "question", "answers", "prediction", "context_tokens", "read_tokens", "seconds",
               "em", "f1", "rouge1", "raw_em"}
SUMMARY_KEYS = {"n", "em", "f1", "rouge1", "raw_em", "reached_ratio", "seconds_per_q", "adapter", "adapter_info",
                "fingerprint", "dtype", "device", "cpu"}


@pytest.mark.parametrize("shots", [0, 1])
@pytest.mark.parametrize("method", [m for m in METHODS if m != "llmlingua"])  # llmlingua: see the slow test below
def test_evaluate(sac, squad, tmp_path, method, shots):
    cfg = EvalConfig(data=squad, method=method, ratio=5, limit=3, shots=shots, max_new_tokens=3)
    out = tmp_path / "results" / f"{method}.json"
    result = evaluate(sac, cfg, out=out, progress=False)
    records, summary = result["records"], result["summary"]
    assert len(records) == 3 and summary["n"] == 3
    assert set(summary) == SUMMARY_KEYS
    assert summary["adapter"] == "untrained"
    for r in records:
        assert set(r) == RECORD_KEYS
        assert r["context_tokens"] > 0
        assert all(r[k] in (0.0, 1.0) for k in ("em", "raw_em")) and 0 <= r["f1"] <= 1 and 0 <= r["rouge1"] <= 1
        assert "\n" not in r["prediction"]
    for k in ("em", "f1", "rouge1", "raw_em"):
        assert 0 <= summary[k] <= 100
    ratio = summary["reached_ratio"]
    if method in ("full", "full-ft"):
        assert ratio == 1.0
        assert all(r["read_tokens"] == r["context_tokens"] for r in records)
    elif method == "truncate":
        assert 5 <= ratio < 6  # each passage cut to len // 5 tokens
    elif method == "sac":
        assert ratio > 1
        assert all(0 < r["read_tokens"] < r["context_tokens"] for r in records)
    else:
        assert ratio is None
        assert all(r["read_tokens"] == 0 for r in records)
    # the JSON written round-trips
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["config"]["method"] == method and result["config"]["shots"] == shots


def test_evaluate_same_questions_for_every_method(sac, squad):
    ids = {m: [r["id"] for r in evaluate(sac, EvalConfig(data=squad, method=m, limit=3, max_new_tokens=1),
                                         progress=False)["records"]] for m in METHODS}
    assert len({tuple(v) for v in ids.values()}) == 1


@pytest.mark.parametrize("passages", [1, 2])
def test_evaluate_reuses_a_shorter_run(sac, squad, tmp_path, passages):
    cfg = dict(data=squad, method="sac", passages=passages, max_new_tokens=3)
    short = tmp_path / "short.json"
    evaluate(sac, EvalConfig(**cfg, limit=2), out=short, progress=False)
    previous = json.loads(short.read_text())
    previous["records"][0]["prediction"] = "kept from the earlier run"  # proves the record is taken, not recomputed
    short.write_text(json.dumps(previous))
    fresh = evaluate(sac, EvalConfig(**cfg, limit=4), progress=False)
    longer = evaluate(sac, EvalConfig(**cfg, limit=4), reuse=short, progress=False)
    assert longer["summary"]["reused"] == {"from": "short.json", "n": 2} and longer["summary"]["n"] == 4
    assert longer["summary"]["dtype"] == str(sac.dtype).removeprefix("torch.") and longer["summary"]["device"] == "cpu"
    assert longer["summary"]["cpu"] == torch.backends.cpu.get_cpu_capability()
    assert longer["records"][0]["prediction"] == "kept from the earlier run"
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert strip(longer["records"][1:]) == strip(fresh["records"][1:])  # same questions, distractors, answers
    assert longer["config"] == fresh["config"]
    del previous["config"]["llmlingua_segment"]  # a file from before that setting existed: it had the default
    short.write_text(json.dumps(previous))
    assert evaluate(sac, EvalConfig(**cfg, limit=3), reuse=short, progress=False)["summary"]["reused"]["n"] == 2


def test_evaluate_refuses_to_reuse_another_run(sac, squad, tmp_path):
    short = tmp_path / "short.json"
    evaluate(sac, EvalConfig(data=squad, method="full", limit=2, max_new_tokens=2), out=short, progress=False)
    with pytest.raises(InvalidInputError, match="shots"):
        evaluate(sac, EvalConfig(data=squad, method="full", limit=3, shots=1, max_new_tokens=2), reuse=short,
                 progress=False)
    with pytest.raises(InvalidInputError, match="method"):
        evaluate(sac, EvalConfig(data=squad, method="truncate", limit=3, max_new_tokens=2), reuse=short,
                 progress=False)
    previous = json.loads(short.read_text())
    previous["model"] = "another/model"
    short.write_text(json.dumps(previous))
    with pytest.raises(InvalidInputError, match="model"):
        evaluate(sac, EvalConfig(data=squad, method="full", limit=3, max_new_tokens=2), reuse=short, progress=False)
    previous["model"] = sac.source
    previous["summary"]["fingerprint"] = "0" * 16  # other weights under the same name
    short.write_text(json.dumps(previous))
    with pytest.raises(InvalidInputError, match="adapter"):
        evaluate(sac, EvalConfig(data=squad, method="full", limit=3, max_new_tokens=2), reuse=short, progress=False)
    previous["summary"]["fingerprint"] = sac.fingerprint
    previous["summary"]["adapter"] = "/elsewhere/a-copy-of-the-same-adapter"  # the fingerprint decides, not the path
    short.write_text(json.dumps(previous))
    assert evaluate(sac, EvalConfig(data=squad, method="full", limit=3, max_new_tokens=2), reuse=short,
                    progress=False)["summary"]["reused"]["n"] == 2
    del previous["summary"]["fingerprint"]  # an old file without one: then the path must match too
    short.write_text(json.dumps(previous))
    with pytest.raises(InvalidInputError, match="adapter"):
        evaluate(sac, EvalConfig(data=squad, method="full", limit=3, max_new_tokens=2), reuse=short, progress=False)
    previous["summary"]["fingerprint"] = sac.fingerprint
    previous["summary"]["dtype"] = "bfloat16" if sac.dtype == torch.float32 else "float32"  # greedy answers may differ
    short.write_text(json.dumps(previous))
    with pytest.raises(InvalidInputError, match="dtype"):
        evaluate(sac, EvalConfig(data=squad, method="full", limit=3, max_new_tokens=2), reuse=short, progress=False)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InvalidInputError, match="not a sac-rag eval JSON"):
        evaluate(sac, EvalConfig(data=squad, method="full", limit=3, max_new_tokens=2), reuse=bad, progress=False)


def test_eval_config_validation(squad):
    from sac_rag import InvalidInputError

    with pytest.raises(InvalidInputError):
        EvalConfig(data=squad, method="oracle")
    with pytest.raises(InvalidInputError):
        EvalConfig(data=squad, passages=0)


def test_too_many_shots(sac, squad):
    from sac_rag import InvalidInputError

    with pytest.raises(InvalidInputError, match="shots"):
        evaluate(sac, EvalConfig(data=squad, shots=10_000, limit=1), progress=False)


def test_select_examples(squad):
    cfg = EvalConfig(data=squad, passages=3, limit=4, seed=7)
    chosen = select_examples(cfg)
    assert len(chosen) == 4
    assert len({e.id for e, _ in chosen}) == 4
    for e, passages in chosen:
        assert len(passages) == 3 and len(set(passages)) == 3
        assert e.passages[0] in passages
    assert select_examples(cfg) == chosen  # deterministic for a seed
    others = [select_examples(EvalConfig(data=squad, passages=3, limit=4, seed=s)) for s in range(8, 14)]
    assert any(o != chosen for o in others)
    gold_at = {passages.index(e.passages[0]) for o in [chosen, *others] for e, passages in o}
    assert len(gold_at) > 1  # the gold passage is not always first


def test_select_examples_gold_only_and_small_pool(squad):
    for e, passages in select_examples(EvalConfig(data=squad, passages=1, limit=None)):
        assert passages == [e.passages[0]]
    for _, passages in select_examples(EvalConfig(data=squad, passages=50, limit=2)):
        assert len(passages) == len(set(passages)) == 5  # capped at the passages there are


# ---- the report ----------------------------------------------------------------------------------
def test_write_report(sac, squad, tmp_path):
    results = tmp_path / "results"
    for method in ("sac", "full"):
        evaluate(sac, EvalConfig(data=squad, method=method, limit=2, max_new_tokens=1), out=results / f"{method}.json",
                 progress=False)
    evaluate(sac, EvalConfig(data=squad, method="full", limit=1, max_new_tokens=1), out=tmp_path / "one.json",
             progress=False)
    evaluate(sac, EvalConfig(data=squad, method="full", limit=3, max_new_tokens=1), out=results / "full3.json",
             reuse=tmp_path / "one.json", progress=False)
    (results / "notes.json").write_text(json.dumps({"not": "an eval file"}))
    (results / "broken.json").write_text("{")
    run = tmp_path / "runs" / "qa-x5"
    run.mkdir(parents=True)
    log = [{"step": s, "items": 4 * s, "loss": 3.0 - 0.1 * s, "grad_norm": 1.0, "lr": 1e-4, "stage": "qa"}
           for s in range(1, 6)]
    log.append(log[2])  # a resumed run logs a step twice
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log) + "not json\n")
    docs = tmp_path / "docs"
    path = write_report(results, docs, logs=[run / "log.jsonl"])
    assert path == docs / "results.md"
    text = path.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| method")]
    assert len(rows) == 3
    assert "`sac-rag eval --reuse`" in text and "full3.json (1 from one.json)" in text  # a table built in two runs says so
    # the tiny models run in float32, and a row not in bf16 says its dtype
    assert sum(line.startswith("| sac 5x (untrained) [float32], 0-shot |") for line in rows) == 1
    assert sum(line.startswith("| full [float32], 0-shot |") for line in rows) == 2  # one per table (2 and 3 questions)
    assert any("sac.json" in line for line in rows) and any("full.json" in line for line in rows)
    assert "1.00x" in text  # full context's reached ratio
    assert "from 3 eval files" in text
    assert f"`sac-rag report --results {results} --log {run / 'log.jsonl'} --out {docs}`" in text  # how to redo it
    assert "## dev.json, gold passage only, 2 questions" in text and "## dev.json, gold passage only, 3 questions" in text
    # each row comes with the command that reproduces it
    assert "sac-rag eval --data " in text and "--method sac --ratio 5 --limit 2 --dtype float32 --json sac.json" in text
    for png in ("f1_vs_ratio.png", "training_loss.png"):
        assert (docs / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"![{png}]({png})" in text


def test_report_overview_and_one_ratio_panel_per_data_set(sac, squad, tmp_path):
    import shutil
    import struct

    other = tmp_path / "other.json"
    shutil.copy(squad, other)
    results = tmp_path / "results"
    runs = [("a", squad, "full", 1, 2), ("b", squad, "full", 1, 3), ("c", squad, "truncate", 1, 3),
            ("d", squad, "full", 2, 2), ("e", str(other), "full", 1, 2)]
    for name, data, method, passages, limit in runs:
        evaluate(sac, EvalConfig(data=data, method=method, passages=passages, limit=limit, max_new_tokens=1),
                 out=results / f"{name}.json", progress=False)
    text = write_report(results, tmp_path / "docs").read_text()
    overview = text.split("## Overview", 1)[1].split("\n## ", 1)[0]
    head = next(line for line in overview.splitlines() if line.startswith("| method"))
    # one column per data set and setting, from its largest table (dev.json gold: the 3-question one)
    assert head.count("|") == 5 and "dev.json, gold passage only, 3 q" in head and "2 q" in head
    assert "other.json, gold passage only, 2 q" in head and "dev.json, gold among 1 distractors, 2 q" in head
    rows = {line.split(" | ")[0][2:]: line for line in overview.splitlines() if line.startswith("| ") and "method" not in line}
    # the row is the method; a cell evaluated in another dtype than bf16 says so
    assert set(rows) == {"full, 0-shot", "truncate 5x, 0-shot"}
    assert rows["full, 0-shot"].count("(1.0x, float32)") == 3
    assert rows["truncate 5x, 0-shot"].count("x, float32)") == 1  # run on one table only: the other cells are blank
    png = (tmp_path / "docs" / "f1_vs_ratio.png").read_bytes()
    width, height = struct.unpack(">II", png[16:24])
    assert width > 1.8 * height  # two panels side by side (dev.json, other.json), the distractor setting left out
    # the same method in bf16 too, on one table: one row still, both cells there, bf16 first
    twin = json.loads((results / "b.json").read_text())
    twin["summary"]["dtype"], twin["summary"]["f1"] = "bfloat16", 99.0
    (results / "b_bf16.json").write_text(json.dumps(twin))
    text = write_report(results, tmp_path / "docs").read_text()
    overview = text.split("## Overview", 1)[1].split("\n## ", 1)[0]
    rows = {line.split(" | ")[0][2:]: line for line in overview.splitlines() if line.startswith("| ") and "method" not in line}
    assert set(rows) == {"full, 0-shot", "truncate 5x, 0-shot"}
    assert "| 99.0 (1.0x) / " in rows["full, 0-shot"] and rows["full, 0-shot"].count("(1.0x, float32)") == 3
    # the tables themselves keep a row per dtype
    table = text.split("gold passage only, 3 questions", 1)[1].split("\n## ", 1)[0]
    assert "| full, 0-shot | " in table and "| full [float32], 0-shot | " in table
    # a method run only on a smaller table of a column: its cell comes from there, with its question count
    evaluate(sac, EvalConfig(data=str(other), method="truncate", limit=1, max_new_tokens=1),
             out=results / "f.json", progress=False)
    text = write_report(results, tmp_path / "docs").read_text()
    overview = text.split("## Overview", 1)[1].split("\n## ", 1)[0]
    rows = {line.split(" | ")[0][2:]: line for line in overview.splitlines() if line.startswith("| ") and "method" not in line}
    cells = rows["truncate 5x, 0-shot"].split(" | ")[1:]
    assert "float32, 1 q)" in cells[-1] and "q)" not in cells[0]  # other.json (1 of its 2 q); dev.json's 3-q table


def test_closed_book_row_joins_the_distractor_table_of_the_same_questions(sac, squad, tmp_path):
    """Closed book reads no passage, so its gold-passage run is also the distractor setting's row (marked), when the
    questions are the same; a table of other questions does not get it."""
    results = tmp_path / "results"
    evaluate(sac, EvalConfig(data=squad, method="closed-book", limit=2, max_new_tokens=1), out=results / "cb.json",
             progress=False)
    evaluate(sac, EvalConfig(data=squad, method="full", passages=2, limit=2, max_new_tokens=1), out=results / "rag.json",
             progress=False)
    evaluate(sac, EvalConfig(data=squad, method="full", passages=2, limit=2, offset=1, max_new_tokens=1),
             out=results / "other" / "rag_offset.json", progress=False)
    text = write_report(results, tmp_path / "docs").read_text()
    rag = text.split("gold among 1 distractors, 2 questions", 1)[1].split("\n## ", 1)[0]
    assert "| closed-book [float32], 0-shot (reads no passage: the gold-passage run) |" in rag and "cb.json" in rag
    overview = text.split("## Overview", 1)[1].split("\n## ", 1)[0]
    row = next(line for line in overview.splitlines() if line.startswith("| closed-book"))
    assert row.count(" | ") == 2  # both settings' cells filled
    # a distractor table of other questions (offset 1): not shared
    other = results / "other"
    (other / "cb.json").write_bytes((results / "cb.json").read_bytes())
    text = write_report(other, tmp_path / "docs2").read_text()
    rag = text.split("gold among 1 distractors, 2 questions", 1)[1].split("\n## ", 1)[0]
    assert "rag_offset.json" in rag and "closed-book" not in rag


def test_loss_series_takes_a_distilled_runs_cross_entropy(tmp_path):
    from sac_rag.evaluation.report import loss_series

    log = tmp_path / "log.jsonl"
    rows = [{"step": 1, "items": 4, "loss": 2.0}, {"step": 2, "items": 8, "loss": 3.0, "ce": 1.5, "kl": 4.5},
            {"step": 2, "items": 8, "loss": 2.5, "ce": 1.2, "kl": 3.8}]  # step 2 logged again by a resumed run
    log.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{broken\n")
    assert loss_series(log) == ([4, 8], [2.0, 1.2])


def test_loss_series_of_a_joint_run_by_ratio(tmp_path):
    from sac_rag.evaluation.report import log_ratios, loss_series

    log = tmp_path / "log.jsonl"
    rows = [{"step": 1, "items": 4, "loss": 2.0, "loss_by_ratio": {"5": 1.5, "15": 2.5}},
            {"step": 2, "items": 5, "loss": 1.0, "loss_by_ratio": {"5": 1.0}},
            {"step": 3, "items": 9, "loss": 2.2, "loss_by_ratio": {"15": 2.0, "5": 2.4}}]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert log_ratios(log) == ["5", "15"]  # numeric order, not string order
    assert loss_series(log, "15") == ([4, 9], [2.5, 2.0])  # step 2 had no 15x item
    assert loss_series(log, "5") == ([4, 5, 9], [1.5, 1.0, 2.4])
    assert loss_series(log) == ([4, 5, 9], [2.0, 1.0, 2.2])
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"step": 1, "items": 4, "loss": 2.0}) + "\n")
    assert log_ratios(plain) == []


def test_write_report_without_plots(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    path = write_report(empty, tmp_path / "docs")
    assert "from 0 eval files" in path.read_text()
    assert not list((tmp_path / "docs").glob("*.png"))


@pytest.mark.slow
def test_llmlingua_baseline_runs_offline_and_reports_the_ratio_it_reached(squad):
    """LLMLingua v1 scored by the embedded base model, cl100k from bpe-openai: no download."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sac = SACModel.from_pretrained(adapter=None)
    result = evaluate(sac, EvalConfig(data=squad, method="llmlingua", ratio=5, limit=2, max_new_tokens=3), progress=False)
    assert result["summary"]["n"] == 2
    for r in result["records"]:
        assert r["read_tokens"] > 0 and r["context_tokens"] > 0
    assert result["summary"]["reached_ratio"] == pytest.approx(
        sum(r["context_tokens"] for r in result["records"]) / sum(r["read_tokens"] for r in result["records"]), abs=0.01)


@pytest.mark.slow
def test_llmlingua_question_is_not_context_and_short_segments_reach_the_ratio():
    """The question conditions LLMLingua but is not appended to the context (it would count as context and be
    asked twice); segments of 30 tokens compress a ~150-token paragraph far more than LLMLingua's default 200."""
    import warnings

    from sac_rag.evaluation.llmlingua_baseline import LLMLinguaCompressor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sac = SACModel.from_pretrained(adapter=None)
        compressor = LLMLinguaCompressor()
    passage = json.loads(resources.files("sac_rag").joinpath("data/demo_corpus.json").read_text())["passages"][0]["text"]
    question = "Which country gave its name to Normandy?"
    default = compressor.compress([passage], question, 5)
    short = compressor.compress([passage], question, 5, segment=30)
    assert question not in default and question not in short
    n = len(sac.tokenize(passage))
    assert len(sac.tokenize(short)) < 0.5 * len(sac.tokenize(default)) <= 0.5 * n
    assert n / len(sac.tokenize(short)) > 3


def test_report_learning_curves(tmp_path):
    """Checkpoint evals on the curve slice become a table and an F1-against-examples plot, one line per series."""
    def record(method, f1, info=None, ratio=5):
        return {"config": {"data": "/x/squad-part2.json", "method": method, "ratio": ratio, "shots": 0 if method == "sac" else 2,
                           "passages": 1, "offset": 5000, "seed": 0, "limit": 100},
                "summary": {"n": 100, "em": f1 / 2, "f1": f1, "rouge1": f1, "raw_em": 0.0, "reached_ratio": ratio,
                            "seconds_per_q": 0.2, "adapter_info": info or {}}}
    results = tmp_path / "evals"
    curve = results / "curve"
    curve.mkdir(parents=True)
    points = {"a.json": record("sac", 10.0, {"trained": True, "stage": "qa", "ratio": 5, "step": 19, "items": 76}),
              "b.json": record("sac", 19.6, {"trained": True, "stage": "qa", "ratio": 5, "step": 435, "items": 1740}),
              "c.json": record("sac", 8.0, {"trained": True, "stage": "qa", "ratio": 15, "step": 50, "items": 200,
                                            "init": "qa x5 step 700"}, ratio=15),
              "d.json": record("sac", 24.0, {"trained": True, "stage": "qa", "ratio": 5, "step": 100, "items": 400,
                                             "elapsed_s": 1800.0, "recipe": "<=1 distractors, decay over last 9 of 99 steps",
                                             "before": {"items": 4000, "elapsed_s": 9000.0}}),
              "full.json": record("full", 31.6)}
    points["e.json"] = json.loads(json.dumps(points["d.json"]))
    points["e.json"]["summary"]["dtype"] = "float32"  # the same adapter evaluated in fp32
    for name, data in points.items():
        (curve / name).write_text(json.dumps(data))
    text = write_report(results, tmp_path / "docs", curve_dir=curve).read_text()
    assert "## Learning curves" in text and "questions 5000..5099" in text
    assert "| sac 5x, qa stage | 76 | 0.00 | 19 | 5.0 | 10.0 | a.json |" in text
    assert "| sac 5x, qa stage | 1,740 | 0.00 | 435 | 9.8 | 19.6 | b.json |" in text
    assert "| sac 15x, qa stage (from qa x5 step 700) | 200 | 0.00 | 50 |" in text
    # a continued run is its own series, placed after the examples and hours of its init adapter
    assert "| sac 5x, qa stage (<=1 distractors) | 4,400 | 3.00 | 100 | 12.0 | 24.0 | d.json |" in text
    # another dtype is another line (greedy answers differ between bf16 and fp32)
    assert "| sac 5x, qa stage (<=1 distractors) [float32] | 4,400 | 3.00 | 100 | 12.0 | 24.0 | e.json |" in text
    assert "| full, 2-shot (no training) | | | | | 31.6 | |" in text
    for png in ("f1_vs_examples.png", "f1_vs_hours.png"):
        assert (tmp_path / "docs" / png).read_bytes()[:4] == b"\x89PNG"


def test_report_command_reproduces_each_row():
    """The command under a table names the data under $DATA, every non-default option, and an adapter outside the
    package by a home-relative path (a fresh clone has it after running the training command)."""
    from pathlib import Path

    from sac_rag.evaluation.report import command

    home = str(Path.home())
    nq = {"config": {"data": "/work/shared/data/nq_open/nq-open-oracle.jsonl.gz", "fmt": "nq", "parity": "odd",
                     "method": "full-ft", "ratio": 5, "passages": 5, "shots": 0, "limit": 200, "seed": 0},
          "summary": {"adapter": f"{home}/.cache/sac-rag/runs/full-ft-qa/latest/adapter"}}
    assert command(nq) == ("sac-rag eval --data $DATA/nq_open/nq-open-oracle.jsonl.gz --format nq --parity odd "
                           "--method full-ft --ratio 5 --passages 5 "
                           "--adapter ~/.cache/sac-rag/runs/full-ft-qa/latest/adapter --limit 200 --dtype bfloat16")
    shipped = {"config": {"data": "/d/squad.json", "method": "sac", "ratio": 15, "passages": 1, "shots": 0, "limit": 500,
                          "offset": 100},
               "summary": {"adapter": "/x/sac_rag/adapters/gemma-3-270m-x15"}}
    # "auto" picks bf16 or fp32 by CPU, so the command pins the dtype; runs before it was recorded were all bf16
    assert command(shipped) == ("sac-rag eval --data /d/squad.json --method sac --ratio 15 --limit 500 --offset 100 "
                                "--dtype bfloat16")
    shipped["summary"]["dtype"] = "float32"
    assert command(shipped).endswith("--offset 100 --dtype float32")
    # a training run's copy of a shipped adapter (evaluated before it shipped) is the package's: the fingerprint
    # says so, and a fresh clone has no such run
    from sac_rag.adapter import read_adapter
    from sac_rag.sac_model import shipped_adapter

    copy = {"config": {"data": "/d/squad.json", "method": "sac", "ratio": 5, "passages": 1, "shots": 0, "limit": 200},
            "summary": {"adapter": f"{home}/.cache/sac-rag/runs/r/candidate", "dtype": "float32",
                        "fingerprint": read_adapter(shipped_adapter(5)).fingerprint}}
    assert command(copy) == "sac-rag eval --data /d/squad.json --method sac --ratio 5 --limit 200 --dtype float32"
    copy["summary"]["fingerprint"] = "0" * 16  # other weights: the run's own path
    assert "--adapter ~/.cache/sac-rag/runs/r/candidate --limit 200" in command(copy)
    lingua = {"config": {"data": "/d/squad.json", "method": "llmlingua", "ratio": 15, "passages": 1, "shots": 2,
                         "llmlingua_segment": 30}, "summary": {"adapter": "untrained"}}
    assert command(lingua) == ("sac-rag eval --data /d/squad.json --method llmlingua --ratio 15 --shots 2 "
                               "--llmlingua-segment 30 --dtype bfloat16")


def test_report_names_and_reproduces_grounded_runs():
    from sac_rag.evaluation.report import _method_name, command

    run = {"config": {"data": "/d/squad.json", "method": "sac", "ratio": 5, "passages": 1, "shots": 0, "limit": 500,
                      "grounded": True},
           "summary": {"adapter": "/x/sac_rag/adapters/gemma-3-270m-x5", "dtype": "float32", "adapter_info": {"stage": "qa"}}}
    assert command(run) == "sac-rag eval --data /d/squad.json --method sac --ratio 5 --limit 500 --grounded --dtype float32"
    assert _method_name(run) == "sac 5x (qa), grounded [float32], 0-shot"
    run["config"]["grounded"] = False
    assert "grounded" not in command(run) and "grounded" not in _method_name(run)


def test_report_names_and_reproduces_picked_passage_runs():
    from sac_rag.evaluation.report import _method_name, command

    run = {"config": {"data": "/d/squad.json", "method": "sac", "ratio": 5, "passages": 5, "shots": 0, "limit": 500,
                      "grounded": True, "pick_passage": True},
           "summary": {"adapter": "/x/sac_rag/adapters/gemma-3-270m-x5", "dtype": "float32", "adapter_info": {"stage": "qa"}}}
    assert "--pick-passage" in command(run) and "--grounded" not in command(run)  # --pick-passage implies it
    assert _method_name(run) == "sac 5x (qa), grounded in a picked passage [float32], 0-shot"


def test_select_examples_by_relevance(squad):
    """``order="relevance"``: the questions and passages of the random order, ranked by the embedded retriever
    with the most similar passage last (``docs/ordering.md``)."""
    from sac_rag.retrieval import default_embedder

    base = EvalConfig(data=squad, passages=3, limit=4, seed=7)
    random_order = select_examples(base)
    ranked = select_examples(EvalConfig(data=squad, passages=3, limit=4, seed=7, order="relevance"))
    embedder = default_embedder()
    for (e, drawn), (e2, placed) in zip(random_order, ranked):
        assert e.id == e2.id and sorted(drawn) == sorted(placed)
        q = embedder.encode([e.question], normalize_embeddings=True)
        sims = (embedder.encode(placed, normalize_embeddings=True) @ q.T).ravel().tolist()
        assert sims == sorted(sims)  # least similar first, most similar last
    with pytest.raises(InvalidInputError, match="order must be one of"):
        EvalConfig(data=squad, order="best-last")


def test_evaluate_records_the_order(sac, squad):
    cfg = EvalConfig(data=squad, passages=3, limit=2, seed=7, order="relevance")
    result = evaluate(sac, cfg, progress=False)
    assert result["config"]["order"] == "relevance"
    assert [r["id"] for r in result["records"]] == [e.id for e, _ in select_examples(cfg)]


def test_select_examples_with_retrieved_distractors(tmp_path):
    """``distractors="retrieved"``: each question's distractors are the passages the embedded MiniLM ranks nearest
    it, leaving out any that holds one of its answers (hard negatives), so the gold passage need not rank first."""
    from sac_rag.evaluation.metrics import normalize
    from sac_rag.retrieval import default_embedder

    path = tmp_path / "dev.json"
    write_squad(path)
    data = json.loads(path.read_text())
    # a passage near the river question that holds its answer: never a distractor for it
    data["data"][0]["paragraphs"].append({"context": "The river canal is 3 hundred kilometres long, beside the river.",
                                          "qas": [{"id": "c0", "question": "How long is the river canal?",
                                                   "answers": [{"text": "3 hundred kilometres"}]}]})
    path.write_text(json.dumps(data))
    cfg = EvalConfig(data=str(path), passages=3, limit=None, seed=3, distractors="retrieved")
    items = select_examples(cfg)
    assert len(items) == 6
    pool = sorted({p for e, _ in items for p in e.passages})
    embedder = default_embedder()
    vectors = embedder.encode(pool, normalize_embeddings=True)
    for e, passages in items:
        assert len(passages) == len(set(passages)) == 3 and e.passages[0] in passages
        answers = [normalize(a) for a in e.answers]
        eligible = [p for p in pool if p != e.passages[0] and not any(f" {a} " in f" {normalize(p)} " for a in answers)]
        sims = dict(zip(pool, (vectors @ embedder.encode([e.question], normalize_embeddings=True).T).ravel().tolist()))
        nearest = sorted(eligible, key=lambda p: -sims[p])[:2]
        assert sorted(p for p in passages if p != e.passages[0]) == sorted(nearest)
    river = next(passages for e, passages in items if e.id == "p0")
    assert not any("canal" in p for p in river)  # it holds the river question's answer
    assert select_examples(cfg) == items  # deterministic
    # ranked by relevance, the same passages; one passage a question: the gold one alone, as before
    ranked = select_examples(replace(cfg, order="relevance"))
    assert [(e.id, sorted(p)) for e, p in ranked] == [(e.id, sorted(p)) for e, p in items]
    alone = select_examples(replace(cfg, passages=1))
    assert all(p == [e.passages[0]] for e, p in alone)
    with pytest.raises(InvalidInputError, match="distractors must be one of"):
        EvalConfig(data=str(path), distractors="hard")


def test_report_keeps_other_passage_settings_out_of_its_tables(sac, squad, tmp_path):
    from sac_rag.evaluation.report import command

    results = tmp_path / "results"
    evaluate(sac, EvalConfig(data=squad, method="full", passages=2, limit=2, max_new_tokens=1),
             out=results / "random.json", progress=False)
    evaluate(sac, EvalConfig(data=squad, method="full", passages=2, limit=2, max_new_tokens=1, order="relevance",
                             distractors="retrieved"), out=results / "retrieved.json", progress=False)
    run = json.loads((results / "retrieved.json").read_text())
    assert "--distractors retrieved" in command(run) and "--order relevance" in command(run)
    plain = json.loads((results / "random.json").read_text())
    assert "--distractors" not in command(plain) and "--order" not in command(plain)
    text = write_report(results, tmp_path / "docs").read_text()
    assert "from 1 eval files" in text
    assert "Not in these tables, run in another passage setting (relevance order or retrieved distractors): retrieved.json." in text
    assert "| random.json |" in text and "| retrieved.json |" not in text


def test_evaluate_reuses_compressed_passages(sac, squad):
    """--reuse-kv: each distinct passage is compressed once per run; later questions that come with it read the
    stored KV, and the answers are those of compressing afresh (the tiny model in float32)."""
    from sac_rag import InvalidInputError

    cfg = dict(data=squad, method="sac", passages=3, limit=5, max_new_tokens=3, grounded=True)
    fresh = evaluate(sac, EvalConfig(**cfg), progress=False)
    reused = evaluate(sac, EvalConfig(**cfg, reuse_kv=True), progress=False)
    slots = [p for _, ps in select_examples(EvalConfig(**cfg)) for p in ps]
    assert reused["summary"]["kv_reuse"] == {"compressed": len(set(slots)), "reused": len(slots) - len(set(slots))}
    assert len(slots) - len(set(slots)) >= 10  # 5 paragraphs, 15 passage slots
    assert [r["prediction"] for r in reused["records"]] == [r["prediction"] for r in fresh["records"]]
    assert [r["read_tokens"] for r in reused["records"]] == [r["read_tokens"] for r in fresh["records"]]
    assert "kv_reuse" not in fresh["summary"] and reused["config"]["reuse_kv"] is True
    with pytest.raises(InvalidInputError, match="reuse_kv"):
        EvalConfig(data=squad, method="full", reuse_kv=True)


def _result(method: str, f1: float, *, items: int = 0, before: int = 0, grounded: bool = False, dtype: str = "float32",
            ratio: int = 5, passages: int = 1, order: str = "random") -> dict:
    info = {"trained": True, "stage": "qa", "items": items, "before": {"items": before}} if method == "sac" else {}
    return {"config": {"data": "/x/dev.json", "parity": None, "passages": passages, "limit": 500, "method": method,
                       "ratio": ratio, "shots": 0, "offset": 0, "grounded": grounded, "order": order},
            "summary": {"n": 500, "f1": f1, "dtype": dtype, "adapter_info": info}, "records": []}


def test_history_of_the_shipped_adapter_from_previous_folders(tmp_path):
    """Each 5x adapter's table runs, kept in previous-* folders when it was replaced, become one row per adapter (its
    QA items), one column per setting and decoding, with the share of full-ft decoded the same way; runs in
    bf16, at another ratio or in another passage order stay out."""
    import struct

    from sac_rag.evaluation.report import _history, _load

    results = tmp_path / "evals"
    kept = {"previous-x5-a": [_result("sac", 30.0, items=1000, before=9000),
                              _result("sac", 40.0, items=1000, before=9000, grounded=True),
                              _result("sac", 99.0, items=1000, before=9000, dtype="bfloat16")],
            "previous-x5-b": [_result("sac", 33.0, items=2000, before=10000),
                              _result("sac", 77.0, items=2000, before=10000, order="relevance"),
                              _result("sac", 20.0, items=500, before=0, ratio=15)],
            ".": [_result("sac", 34.0, items=1000, before=12000), _result("sac", 45.0, items=1000, before=12000, grounded=True),
                  _result("full-ft", 50.0), _result("full-ft", 60.0, grounded=True)]}
    for folder, rows in kept.items():
        (results / folder).mkdir(parents=True, exist_ok=True)
        for i, row in enumerate(rows):
            (results / folder / f"r{i}.json").write_text(json.dumps(row))
    current = [r for r in _load(results) if r["config"].get("order") == "random"]
    lines = _history(results, {("dev.json", None, 1): current}, tmp_path)
    table = [line for line in lines if line.startswith("| ")]
    assert table[0] == "| QA items | dev.json, gold passage only, free | dev.json, gold passage only, grounded |"
    assert table[1:] == ["| 10,000 | 30.0 (60%) | 40.0 (67%) |", "| 12,000 | 33.0 (66%) |  |",
                         "| 13,000 | 34.0 (68%) | 45.0 (75%) |"]
    png = (tmp_path / "f1_history.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and "![f1_history.png](f1_history.png)" in lines
    width, height = struct.unpack(">II", png[16:24])
    assert width < 1.5 * height  # one panel: one data set and setting
    # one adapter only: no history to draw
    assert _history(tmp_path / "none", {("dev.json", None, 1): current[:1]}, tmp_path) == []
