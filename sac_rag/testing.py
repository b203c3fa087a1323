"""Tiny, randomly initialised models and a byte-level tokenizer, built in-process (no downloads).

For tests of sac-rag and of code built on it (the integration packages use it): Llama 3-shaped and
Gemma 3-shaped models small enough to run in milliseconds on a CPU. Not for real use.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIALS = ["<pad>", "<eos>", "<bos>"]


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level tokenizer: ids 0-2 are pad/eos/bos, then one id per byte."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {s: i for i, s in enumerate(SPECIALS)}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>")
    return fast


VOCAB = 3 + 256


def tiny_llama(seed: int = 0, dtype=torch.float32) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=4096, bos_token_id=2, eos_token_id=1, pad_token_id=0, initializer_range=0.2,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
        attn_implementation="sdpa",
    )
    return LlamaForCausalLM(cfg).to(dtype).eval()


def tiny_gemma3(seed: int = 0, dtype=torch.float32, sliding_window: int = 512) -> Gemma3ForCausalLM:
    torch.manual_seed(seed)
    cfg = Gemma3TextConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, max_position_embeddings=4096, bos_token_id=2, eos_token_id=1,
        pad_token_id=0, sliding_window=sliding_window, initializer_range=0.2,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                         "full_attention": {"rope_type": "default", "rope_theta": 1000000.0}},
        attn_implementation="sdpa",
    )
    return Gemma3ForCausalLM(cfg).to(dtype).eval()


def tiny_sac(kind: str = "llama", *, seed: int = 0, **config):
    """An SACModel over a tiny model ("llama" or "gemma3") with the byte tokenizer."""
    from .config import SACConfig
    from .sac_model import SACModel

    model = {"llama": tiny_llama, "gemma3": tiny_gemma3}[kind](seed=seed)
    return SACModel.from_model(model, byte_tokenizer(), SACConfig(**config))
