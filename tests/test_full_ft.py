"""The full-ft rival: a LoRA on the base model reading the full text, trained and evaluated by the same code."""

from __future__ import annotations

import json

import pytest

from sac_rag.evaluation.qa import EvalConfig, evaluate
from sac_rag.training.tasks import build_prompt, text_prompt
from sac_rag.training.trainer import train
from test_trainer import base, config, data, load  # noqa: F401  (fixtures)

pytestmark = pytest.mark.filterwarnings("ignore:SACModel. no trained adapter:UserWarning")


def test_text_prompt_puts_each_passage_where_its_kv_would_be():
    passages = ("first passage", "second passage")
    sac_shape = text_prompt(build_prompt("sac", "Who?", 2), passages, "### Context:\n")
    assert sac_shape == "### Context:\nfirst passage\n### Context:\nsecond passage\n### Question:\nWho?\n### Answer:\n"
    li = text_prompt(build_prompt("llamaindex", "Who?", 2), passages, "")
    assert "first passage\n\nsecond passage" in li and li.endswith("Query: Who?\nAnswer: ")


def test_full_ft_trains_a_reader_lora_and_evaluates_with_it(base, data, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    adapter = train(config(base, data, out, method="full-ft", steps=3), progress=False)
    state = json.loads((out / "latest" / "state.json").read_text())
    assert state["method"] == "full-ft" and state["step"] == 3
    logged = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert all(rec["loss"] > 0 for rec in logged)
    sac = load(base, adapter)
    fresh = load(base, cfg=config(base, data, tmp_path / "unused"))
    assert sac.adapter_fingerprint != fresh.adapter_fingerprint  # the LoRA moved
    # The anchor embedding is not part of full-ft: it never receives a gradient, so it keeps its initial value.
    assert (sac.embeddings.anchor == fresh.embeddings.anchor).all()
    ft = evaluate(sac, EvalConfig(data=data, method="full-ft", limit=3), progress=False)
    plain = evaluate(sac, EvalConfig(data=data, method="full", limit=3), progress=False)
    assert ft["summary"]["n"] == plain["summary"]["n"] == 3
    assert ft["summary"]["reached_ratio"] == 1.0
    # Same prompts; with the LoRA on, the reader differs from the base model on at least one answer or score.
    assert [r["prediction"] for r in ft["records"]] != [r["prediction"] for r in plain["records"]] or \
        ft["summary"]["f1"] != plain["summary"]["f1"]
