"""The adapters that ship inside the package: one per ratio, loaded by default, small, and trained.

Marked slow (the embedded model). "Trained" is checked where it cannot be faked: on the demo questions, the
shipped adapter makes the gold answer more likely (teacher-forced NLL) than an untrained adapter does.
"""

from __future__ import annotations

import functools
import json
import warnings
from importlib import resources

import pytest
import torch

from sac_rag import SACConfig, SACModel
from sac_rag.config import QA_TEMPLATE
from sac_rag.generation import _prefill
from sac_rag.sac_model import SHIPPED_DIR, shipped_adapter

pytestmark = pytest.mark.slow


def demo_questions() -> list[tuple[str, str, str]]:
    corpus = json.loads(resources.files("sac_rag").joinpath("data/demo_corpus.json").read_text(encoding="utf-8"))
    text = {p["id"]: p["text"] for p in corpus["passages"]}
    return [(text[q["passage"]], q["question"], q["answers"][0]) for q in corpus["questions"]]


def answer_nll(sac: SACModel, items) -> float:
    """Mean negative log-likelihood per answer token (answer + EOS), gold passage compressed, reference template."""
    total, count = 0.0, 0
    with torch.inference_mode():
        for passage, question, answer in items:
            target = sac.tokenize(answer) + [sac.tokenizer.eos_token_id]
            state = _prefill(sac._context(), [sac.compress(passage), QA_TEMPLATE.format(question=question), target],
                             keep=len(target) + 1)
            logits = state.logits[:-1].float()
            total += float(torch.nn.functional.cross_entropy(logits, torch.tensor(target), reduction="sum"))
            count += len(target)
    return total / count


@functools.lru_cache(maxsize=None)
def untrained_nll(ratio: int) -> float:
    """The demo questions' answer NLL under an untrained adapter at ``ratio`` (computed once per ratio)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        untrained = SACModel.from_pretrained(adapter=None, config=SACConfig(ratio=ratio))
    return answer_nll(untrained, demo_questions())


def test_shipped_adapters_fit_the_size_budget():
    size = sum(f.stat().st_size for f in SHIPPED_DIR.rglob("*") if f.is_file())
    assert size <= 25 * 2**20, f"shipped adapters take {size / 2**20:.1f} MiB, over 25 MiB"


@pytest.mark.parametrize("ratio", [5, 15])
def test_shipped_adapter_is_the_default_and_is_trained(ratio):
    assert shipped_adapter(ratio) is not None, f"no adapter ships for ratio {ratio}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sac = SACModel.from_pretrained() if ratio == 5 else SACModel.from_pretrained(ratio=ratio)
    assert not [w for w in caught if "UNTRAINED" in str(w.message)]
    assert sac.trained and sac.config.ratio == ratio and sac.adapter_path == shipped_adapter(ratio)
    assert sac.config.anchor_slots == -(-510 // ratio)
    from sac_rag.adapter import read_adapter

    assert read_adapter(shipped_adapter(ratio)).fingerprint == sac.fingerprint, "the report names results by it"
    assert answer_nll(sac, demo_questions()) < untrained_nll(ratio) - 1.0  # nats per answer token


def test_a_run_from_the_shipped_adapter_counts_its_training():
    from sac_rag.adapter import read_adapter
    from sac_rag.training.trainer import prior_training

    path = shipped_adapter(5)
    info = read_adapter(path).meta["info"]
    prior = prior_training(path, "qa", 5)
    # every item, answer token and second behind the default (an average: its runs' records fill in what it lacks)
    assert prior["items"] == info["items"] + info["before"]["items"]
    assert prior["tokens"] > 0 and prior["elapsed_s"] > 0
    assert prior_training(path, "qa", 15) == {"items": 0, "tokens": 0, "elapsed_s": 0.0}  # a 15x run starts at 0
