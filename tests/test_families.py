"""Qwen2 and Mistral (sliding window) tiny models: the plumbing is exact and placement matches a fresh encode."""

from __future__ import annotations

import pytest
import torch
from transformers import MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

from sac_rag import SACConfig, SACModel
from sac_rag.testing import VOCAB, byte_tokenizer

COMMON = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=4096, bos_token_id=2, eos_token_id=1, pad_token_id=0,
              initializer_range=0.2, attn_implementation="sdpa")


def qwen2():
    torch.manual_seed(0)
    return Qwen2ForCausalLM(Qwen2Config(**COMMON)).eval()


def mistral():
    torch.manual_seed(0)
    return MistralForCausalLM(MistralConfig(**COMMON, sliding_window=64)).eval()


EXACT = dict(ratio=1, bidirectional=False, anchor_embedding="none", lm_token=False, template="", lora_rank=0)


@pytest.mark.parametrize("build", [qwen2, mistral], ids=["qwen2", "mistral"])
def test_exact_plumbing(build):
    model, tok = build(), byte_tokenizer()
    sac = SACModel.from_model(model, tok, SACConfig(**EXACT))
    context, question = "The cat sat on the mat. ", "Where did the cat sit?"
    out = sac.generate([sac.compress(context), question], max_new_tokens=12)
    ids = [tok.bos_token_id] + sac.tokenize(context) + sac.tokenize(question)
    ref = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False)[0, len(ids):].tolist()
    assert out.token_ids == ref[: len(out.token_ids)] and out.token_ids


@pytest.mark.parametrize("build", [qwen2, mistral], ids=["qwen2", "mistral"])
def test_placed_at_matches_concat_order(build):
    sac = SACModel.from_model(build(), byte_tokenizer(), SACConfig())
    a, b = sac.compress_batch(["first passage about cats and mats", "second passage about dogs"])
    joined = type(a).concat([a, b])
    placed = b.placed_at(a.num_tokens)
    assert torch.allclose(joined.keys[:, :, a.num_anchors:], placed.keys, atol=1e-5)
    # decoding from the two KVs equals decoding from their concatenation
    q = "\n### Question:\nWhat?\n### Answer:\n"
    assert sac.generate([a, b, q], max_new_tokens=6).token_ids == sac.generate([joined, q], max_new_tokens=6).token_ids


def test_cache_keyword_follows_the_decoders_forward():
    """transformers renamed the decoder's KV-cache argument (``past_key_values`` -> ``cache``); a cache passed by
    the wrong name is dropped without a word, so sac-rag asks each decoder class which name it takes."""
    from sac_rag.models import cache_kwarg

    class Older(torch.nn.Module):
        def forward(self, inputs_embeds=None, past_key_values=None, use_cache=None, **kwargs):
            return past_key_values

    class Newer(torch.nn.Module):
        def forward(self, inputs_embeds=None, cache=None, use_cache=None, **kwargs):
            return cache

    assert cache_kwarg(Older()) == "past_key_values"
    assert cache_kwarg(Newer()) == "cache"
    sentinel = object()
    for module in (Older(), Newer()):
        assert module(**{cache_kwarg(module): sentinel}) is sentinel


class _FakeTokenizer:
    def __init__(self, ids):
        self.ids = list(ids)

    def encode(self, text, add_special_tokens=True):
        return self.ids


def test_a_mistokenizing_embedded_tokenizer_is_refused():
    """transformers 5.17 converts the embedded GGUF's tokenizer into a different one that runs without an error
    (3-4x the tokens); loading or converting the embedded model must stop with a typed error instead."""
    from sac_rag.errors import ModelLoadError
    from sac_rag.models import _CANARY_IDS, check_embedded_tokenizer

    check_embedded_tokenizer(_FakeTokenizer(_CANARY_IDS))  # Gemma 3's own ids: accepted
    wrong = [i % 1000 for i in range(3 * len(_CANARY_IDS))]
    expected = r"tokenizer in /some/cache does not tokenize like Gemma 3.s \(60 tokens for a check sentence that has 20\)"
    with pytest.raises(ModelLoadError, match=expected):
        check_embedded_tokenizer(_FakeTokenizer(wrong), "/some/cache")
