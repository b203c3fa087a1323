"""``sac-rag compare``: paired differences between eval files, checked by hand, and the refusals."""

from __future__ import annotations

import json
import math

import pytest

from sac_rag.cli import main
from sac_rag.errors import InvalidInputError
from sac_rag.evaluation.compare import paired_difference

CONFIG = {"data": "squad.json", "fmt": None, "parity": None, "method": "sac", "ratio": 5, "passages": 1, "limit": 4,
          "offset": 0, "shots": 0, "seed": 0, "max_new_tokens": 24}


def write(path, f1s: dict, **config) -> str:
    records = [{"id": k, "f1": v, "em": float(v == 1.0), "rouge1": v, "raw_em": 0.0} for k, v in f1s.items()]
    path.write_text(json.dumps({"config": {**CONFIG, **config}, "summary": {}, "records": records}))
    return str(path)


def test_paired_difference_by_hand(tmp_path):
    ref = write(tmp_path / "ref.json", {"a": 1.0, "b": 0.0, "c": 0.5, "d": 0.0})
    # other order, one question the reference lacks ("e"): matched by id, "e" left out
    cand = write(tmp_path / "cand.json", {"d": 0.0, "c": 0.0, "e": 1.0, "b": 1.0, "a": 1.0}, method="full", limit=5)
    r = paired_difference(ref, cand)
    # differences x100: a 0, b +100, c -50, d 0 -> mean 12.5; sample sd sqrt(11875 / 3); se = sd / 2
    assert r.n == 4 and r.diff == pytest.approx(12.5)
    assert r.se == pytest.approx(math.sqrt(11875 / 3) / 2)
    assert (r.better, r.worse, r.ties) == (1, 1, 2)
    assert r.reference_mean == pytest.approx(37.5) and r.candidate_mean == pytest.approx(50.0)
    em = paired_difference(ref, cand, metric="em")  # em is 1 where f1 is 1: a 0, b +100, c 0, d 0
    assert em.diff == pytest.approx(25.0) and (em.better, em.worse, em.ties) == (1, 0, 3)


def test_single_shared_question_has_no_standard_error(tmp_path):
    r = paired_difference(write(tmp_path / "r.json", {"a": 0.0}), write(tmp_path / "c.json", {"a": 1.0, "b": 0.0}))
    assert r.n == 1 and r.diff == pytest.approx(100.0) and math.isnan(r.se)


@pytest.mark.parametrize("change, match", [
    ({"passages": 5}, "passages: 1 vs 5"),
    ({"data": "nq.jsonl.gz"}, "data"),
    ({"shots": 2}, "shots"),
])
def test_unlike_evals_are_refused(tmp_path, change, match):
    ref = write(tmp_path / "ref.json", {"a": 1.0})
    with pytest.raises(InvalidInputError, match=match):
        paired_difference(ref, write(tmp_path / "cand.json", {"a": 0.0}, **change))


def test_bad_files_and_arguments(tmp_path):
    ref = write(tmp_path / "ref.json", {"a": 1.0})
    with pytest.raises(InvalidInputError, match="share no question"):
        paired_difference(ref, write(tmp_path / "other.json", {"z": 1.0}))
    with pytest.raises(InvalidInputError, match="metric"):
        paired_difference(ref, ref, metric="bleu")
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(InvalidInputError, match="not a readable eval file"):
        paired_difference(ref, tmp_path / "junk.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(InvalidInputError, match="not an eval file"):
        paired_difference(tmp_path / "list.json", ref)
    twice = tmp_path / "twice.json"
    twice.write_text(json.dumps({"config": CONFIG, "records": [{"id": "a", "f1": 1.0}, {"id": "a", "f1": 0.0}]}))
    with pytest.raises(InvalidInputError, match="appears twice"):
        paired_difference(ref, twice)
    no_f1 = tmp_path / "nof1.json"
    no_f1.write_text(json.dumps({"config": CONFIG, "records": [{"id": "a", "em": 1.0}]}))
    with pytest.raises(InvalidInputError, match="no 'f1'"):
        paired_difference(ref, no_f1)


def test_cli(tmp_path, capsys):
    ref = write(tmp_path / "ref.json", {"a": 1.0, "b": 0.0})
    cand = write(tmp_path / "cand.json", {"a": 1.0, "b": 0.5})
    assert main(["compare", ref, cand]) == 0
    out = capsys.readouterr().out
    assert "n 2, 50.0 -> 75.0, +25.00 [25.00], better on 1, worse on 0, tied on 1" in out
    assert main(["compare", ref, cand, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["diff"] == pytest.approx(25.0) and rows[0]["n"] == 2 and rows[0]["candidate"] == cand
    # bad input: a typed message on stderr and exit status 2, no traceback
    assert main(["compare", ref, write(tmp_path / "rag.json", {"a": 1.0}, passages=5)]) == 2
    err = capsys.readouterr().err
    assert "InvalidInputError" in err and "passages" in err and "Traceback" not in err
