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
