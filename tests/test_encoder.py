"""The encoder: bidirectional sub-contexts, independence, batching, and exact re-placement."""

from __future__ import annotations

import pytest
import torch

from helpers import fresh_encode, passage_ids, text_of_length
from sac_rag import AnchorKV

ATOL = 1e-5


def close(a: torch.Tensor, b: torch.Tensor, atol: float = ATOL) -> bool:
    return torch.allclose(a, b, atol=atol, rtol=atol)


def first_anchor(kv: AnchorKV) -> torch.Tensor:
    return torch.cat([kv.keys[:, :, 0], kv.values[:, :, 0]])


def change_char(text: str, index: int) -> str:
    c = "Q" if text[index] != "Q" else "Z"
    return text[:index] + c + text[index + 1 :]


def test_bidirectional_first_anchor_sees_the_last_token(make_sac, arch):
    sac = make_sac(arch, ratio=5, bidirectional=True)
    text = text_of_length(200)
    kv, kv2 = sac.compress_batch([text, change_char(text, len(text) - 1)])
    assert kv.num_anchors == kv2.num_anchors
    # The first anchor (position 3) is far from the changed last token, yet it changed.
    assert (first_anchor(kv) - first_anchor(kv2)).abs().max() > 1e-3


def test_causal_first_anchor_does_not_see_later_tokens(make_sac, arch):
    sac = make_sac(arch, ratio=5, bidirectional=False)
    text = text_of_length(200)
    kv, kv2 = sac.compress(text), sac.compress(change_char(text, len(text) - 1))
    assert close(first_anchor(kv), first_anchor(kv2), atol=1e-6)
    # The anchor after the change point does see it: the change is real.
    assert (kv.keys[:, :, -1] - kv2.keys[:, :, -1]).abs().max() > 1e-3


def test_sub_contexts_are_independent(make_sac, arch):
    """A passage over 510 tokens: changing a token in chunk 2 leaves chunk 1's anchors alone, and vice versa."""
    sac = make_sac(arch, ratio=5, bidirectional=True)
    text = text_of_length(900)
    template = len(sac.config.template)
    kv = sac.compress(text)
    in_chunk1 = kv.positions <= 510
    assert 0 < int(in_chunk1.sum()) < kv.num_anchors

    changed2 = sac.compress(change_char(text, 700 - template))  # token 700: chunk 2
    assert close(kv.keys[:, :, in_chunk1], changed2.keys[:, :, in_chunk1], atol=1e-6)
    assert close(kv.values[:, :, in_chunk1], changed2.values[:, :, in_chunk1], atol=1e-6)
    assert (kv.keys[:, :, ~in_chunk1] - changed2.keys[:, :, ~in_chunk1]).abs().max() > 1e-3

    changed1 = sac.compress(change_char(text, 400 - template))  # token 400: chunk 1
    assert close(kv.keys[:, :, ~in_chunk1], changed1.keys[:, :, ~in_chunk1], atol=1e-6)
    assert close(kv.values[:, :, ~in_chunk1], changed1.values[:, :, ~in_chunk1], atol=1e-6)
    assert (kv.keys[:, :, in_chunk1] - changed1.keys[:, :, in_chunk1]).abs().max() > 1e-3


def test_second_chunk_is_encoded_like_a_passage_of_its_own(make_sac, arch):
    """Chunk 2 of a long passage equals a fresh encode of its tokens with BOS at position 510."""
    sac = make_sac(arch, ratio=5)
    text = text_of_length(800)
    ids = passage_ids(sac, text)
    kv = sac.compress(text)
    keys, values = fresh_encode(sac, ids[510:], start=510)
    second = kv.positions > 510
    assert close(kv.keys[:, :, second], keys)
    assert close(kv.values[:, :, second], values)


@pytest.mark.parametrize("batch_size", [1, 2, 8])
def test_compress_batch_equals_one_by_one(make_sac, arch, batch_size):
    sac = make_sac(arch, ratio=3)
    texts = [text_of_length(n, salt=i) for i, n in enumerate([5, 700, 130, 37, 510, 1200])]
    batch = sac.compress_batch(texts, batch_size=batch_size)
    assert len(batch) == len(texts)
    for text, got in zip(texts, batch):
        want = sac.compress(text)
        assert got.num_tokens == want.num_tokens == len(passage_ids(sac, text))
        assert torch.equal(got.positions, want.positions)
        assert got.keys.shape == want.keys.shape
        assert close(got.keys, want.keys)
        assert close(got.values, want.values)
        assert got.fingerprint == want.fingerprint == sac.fingerprint
        assert got.content_hash == want.content_hash


def test_length_batches_bound_the_padding():
    from sac_rag.sac_model import _length_batches

    lengths = [510, 2, 500, 400, 380, 100, 90]
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches = _length_batches(order, lengths, batch_size=8)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    # every item is at least 3/4 of its batch's longest: the 2-token tail of a 512-token passage is never padded to 510
    assert all(lengths[i] >= 0.75 * lengths[b[0]] for b in batches for i in b)
    assert [[lengths[i] for i in b] for b in batches] == [[510, 500, 400], [380], [100, 90], [2]]
    assert all(len(b) <= 2 for b in _length_batches(order, lengths, batch_size=2))
    assert _length_batches(order, lengths, batch_size=1) == [[i] for i in order]


def test_default_batch_size_gives_the_same_kv(make_sac):
    sac = make_sac("llama", ratio=3)
    assert sac.default_batch_size == 8
    texts = [text_of_length(n, salt=i) for i, n in enumerate([40, 600])]
    for got, want in zip(sac.compress_batch(texts), sac.compress_batch(texts, batch_size=1)):
        assert close(got.keys, want.keys) and close(got.values, want.values)


def test_compress_is_deterministic_and_content_hashed(make_sac):
    sac = make_sac("llama")
    a, b, c = sac.compress_batch(["same text", "same text", "other text"])
    assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
    assert a.content_hash == b.content_hash != c.content_hash


def test_anchor_embedding_changes_the_kv(make_sac, arch):
    """The learned anchor vectors are added to the anchors' inputs ('none' adds nothing)."""
    text = text_of_length(60)
    kvs = {}
    for mode in ("per_slot", "shared", "none"):
        sac = make_sac(arch, ratio=5, anchor_embedding=mode, lora_rank=0)
        with torch.no_grad():
            sac.embeddings.anchor.normal_(0, 1.0)
        kvs[mode] = sac.compress(text)
    assert (kvs["per_slot"].keys - kvs["none"].keys).abs().max() > 1e-3
    assert (kvs["shared"].keys - kvs["none"].keys).abs().max() > 1e-3
    assert (kvs["shared"].keys - kvs["per_slot"].keys).abs().max() > 1e-3


def test_lora_is_on_while_compressing_and_off_while_decoding(make_sac):
    """Non-zero LoRA weights change the KV (adapter on in the encoder) but not text-only decoding."""
    sac = make_sac("llama", ratio=5)
    text = text_of_length(80)
    before = sac.compress(text)
    tokens_before = sac.generate(["plain text prompt"], max_new_tokens=3).token_ids
    with torch.no_grad():
        for name, p in sac.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    after = sac.compress(text)
    assert (before.keys - after.keys).abs().max() > 1e-3
    assert sac.generate(["plain text prompt"], max_new_tokens=3).token_ids == tokens_before


# ---- exact re-placement -------------------------------------------------------------------------


def assert_placed_close(placed: AnchorKV, keys: torch.Tensor, values: torch.Tensor) -> None:
    """Keys agree up to float32's resolution of the rotary angle at the farthest position.

    The model itself computes the angle ``position * inv_freq`` in float32, so at position P a
    key is only defined to about one ulp(P) radians; beyond that the two must agree to 1e-5.
    """
    far = int(placed.positions.max())
    tol = ATOL + torch.finfo(torch.float32).eps * far * float(keys.abs().max())
    assert (placed.keys - keys).abs().max() <= tol
    assert close(placed.values, values)


@pytest.mark.parametrize("offset", [1, 37, 100])
def test_placed_at_equals_fresh_encode_at_offset(make_sac, arch, offset):
    """Rotating stored keys to a new place equals encoding the passage there (llama3 scaling, gemma3 two bases)."""
    sac = make_sac(arch, ratio=3)
    text = text_of_length(100)
    ids = passage_ids(sac, text)
    kv = sac.compress(text)
    placed = kv.placed_at(offset)
    keys, values = fresh_encode(sac, ids, start=offset)
    assert placed.start == offset and placed.end == offset + kv.num_tokens
    assert torch.equal(placed.positions, kv.positions + offset)
    assert close(placed.keys, keys)
    assert close(placed.values, values)
    # ... and the rotation is not a no-op: the keys did move.
    assert (placed.keys - kv.keys).abs().max() > 1e-2


@pytest.mark.parametrize("offset", [511, 2000, 3500])
def test_placed_at_far_offsets(make_sac, arch, offset):
    sac = make_sac(arch, ratio=3)
    text = text_of_length(150)
    placed = sac.compress(text).placed_at(offset)
    keys, values = fresh_encode(sac, passage_ids(sac, text), start=offset)
    assert_placed_close(placed, keys, values)


@pytest.mark.parametrize("offset", [5, 260])
def test_placed_at_equals_fresh_encode_for_a_multi_chunk_passage(make_sac, arch, offset):
    sac = make_sac(arch, ratio=5)
    text = text_of_length(700)
    ids = passage_ids(sac, text)
    placed = sac.compress(text).placed_at(offset)
    parts = [fresh_encode(sac, ids[s : s + 510], start=offset + s) for s in range(0, len(ids), 510)]
    assert_placed_close(placed, torch.cat([k for k, _ in parts], dim=2), torch.cat([v for _, v in parts], dim=2))


def test_placed_at_composes(make_sac, arch):
    kv = make_sac(arch, ratio=2).compress(text_of_length(90))
    for a, b in [(17, 250), (400, 3), (0, 99), (99, 0), (1000, 1000)]:
        twice, once = kv.placed_at(a).placed_at(b), kv.placed_at(b)
        assert twice.start == once.start == b
        assert torch.equal(twice.positions, once.positions)
        assert close(twice.keys, once.keys)
        assert torch.equal(twice.values, kv.values)
    assert kv.placed_at(0) is kv
    assert close(kv.placed_at(321).placed_at(0).keys, kv.keys)


def test_concat_places_each_passage_after_the_previous(make_sac, arch):
    sac = make_sac(arch, ratio=4)
    ta, tb = text_of_length(120, salt=1), text_of_length(77, salt=2)
    kv_a, kv_b = sac.compress_batch([ta, tb])
    joined = AnchorKV.concat([kv_a, kv_b])
    assert joined.num_tokens == kv_a.num_tokens + kv_b.num_tokens
    assert joined.num_anchors == kv_a.num_anchors + kv_b.num_anchors
    assert joined.start == 0 and joined.fingerprint == sac.fingerprint
    assert joined.positions.tolist() == kv_a.positions.tolist() + (kv_b.positions + kv_a.num_tokens).tolist()
    na = kv_a.num_anchors
    assert torch.equal(joined.keys[:, :, :na], kv_a.keys)
    keys_b, values_b = fresh_encode(sac, passage_ids(sac, tb), start=kv_a.num_tokens)
    assert close(joined.keys[:, :, na:], keys_b)
    assert close(joined.values[:, :, na:], values_b)
    # Concatenating a placed KV keeps its start.
    shifted = AnchorKV.concat([kv_a.placed_at(10), kv_b])
    assert shifted.start == 10
    assert close(shifted.keys, joined.placed_at(10).keys)
