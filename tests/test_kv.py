"""AnchorKV: file format (round trip, corruption, provenance) and mismatch detection."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save as st_save

from helpers import text_of_length
from sac_rag import AnchorKV, CorruptKVError, InvalidInputError, KVMismatchError, SACError


@pytest.fixture
def sac(make_sac):
    return make_sac("gemma3", ratio=5)


@pytest.fixture
def kv(sac):
    return sac.compress(text_of_length(640))  # two sub-contexts


def assert_same_kv(a: AnchorKV, b: AnchorKV) -> None:
    assert torch.equal(a.keys, b.keys)
    assert torch.equal(a.values, b.values)
    assert torch.equal(a.positions, b.positions)
    assert a.keys.dtype == b.keys.dtype and a.positions.dtype == b.positions.dtype
    assert (a.num_tokens, a.start, a.fingerprint, a.content_hash) == (b.num_tokens, b.start, b.fingerprint, b.content_hash)
    assert torch.equal(a.rotary.inv_freq, b.rotary.inv_freq)
    assert torch.equal(a.rotary.layer_type, b.rotary.layer_type)


def test_save_load_round_trip(kv, tmp_path):
    path = kv.save(tmp_path / "sub" / "passage.sackv")
    assert path.is_file()
    assert [p.name for p in path.parent.iterdir()] == ["passage.sackv"], "no temporary file left behind"
    loaded = AnchorKV.load(path)
    assert_same_kv(kv, loaded)
    assert loaded.num_anchors == kv.num_anchors and loaded.nbytes == kv.nbytes
    # Placement works after loading, without the model (the rotary table travels in the file).
    assert_same_kv(loaded.placed_at(123), kv.placed_at(123))
    assert loaded.placed_at(123).start == 123


def test_load_with_expected_fingerprint(kv, sac, tmp_path):
    path = kv.save(tmp_path / "kv.safetensors")
    assert_same_kv(AnchorKV.load(path, expected_fingerprint=sac.fingerprint), kv)
    with pytest.raises(KVMismatchError):
        AnchorKV.load(path, expected_fingerprint="0" * 16)
    with pytest.raises(KVMismatchError):
        AnchorKV.from_bytes(kv.to_bytes(), expected_fingerprint="not-this-model")


def test_bytes_round_trip_of_placed_and_concatenated(kv, sac):
    other = sac.compress("a short second passage")
    for item in (kv, kv.placed_at(77), AnchorKV.concat([kv, other]), kv.to(dtype=torch.bfloat16)):
        data = item.to_bytes()
        assert isinstance(data, bytes)
        back = AnchorKV.from_bytes(data)
        assert_same_kv(item, back)
        assert AnchorKV.from_bytes(bytearray(data)).num_anchors == item.num_anchors
        assert AnchorKV.from_bytes(memoryview(data)).num_anchors == item.num_anchors


def test_loaded_kv_generates_like_the_original(kv, sac, tmp_path):
    loaded = AnchorKV.load(kv.save(tmp_path / "kv"))
    a = sac.generate([kv, "question?"], max_new_tokens=5)
    b = sac.generate([loaded, "question?"], max_new_tokens=5)
    assert a.token_ids == b.token_ids


@pytest.mark.parametrize("keep", [0, 1, 7, 8, 9, 100, "header", "half", "minus1"])
def test_truncated_file_raises_corrupt(kv, tmp_path, keep):
    data = kv.to_bytes()
    header = 8 + int.from_bytes(data[:8], "little")
    n = {"header": header, "half": len(data) // 2, "minus1": len(data) - 1}.get(keep, keep)
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[:n])
    with pytest.raises(CorruptKVError):
        AnchorKV.load(path)


def test_every_single_bit_flip_is_detected(make_sac):
    """Flip one bit anywhere in the file: loading never succeeds silently.

    Flips in tensor data, in the header's tensor table and in every metadata value (num_tokens,
    start, fingerprint, content hash, rotary table) are CorruptKVError; only a flip that makes the
    version field unreadable may say KVMismatchError (a version this library cannot read).
    """
    sac = make_sac("llama", ratio=5)
    data = sac.compress("Short passage, so that flipping every bit of its file stays fast.").to_bytes()
    header_end = 8 + int.from_bytes(data[:8], "little")
    version_at = data.index(b'"version"')
    version_span = range(version_at - 1, version_at + len(b'"version":"1"') + 1)
    for i in range(len(data)):
        for bit in range(0, 8, 3 if i >= header_end else 1):  # every bit in the header, 3 per data byte
            flipped = bytearray(data)
            flipped[i] ^= 1 << bit
            with pytest.raises(SACError) as info:
                AnchorKV.from_bytes(bytes(flipped))
            if i not in version_span:
                assert isinstance(info.value, CorruptKVError), (i, bit, info.value)
            else:
                assert isinstance(info.value, (CorruptKVError, KVMismatchError)), (i, bit, info.value)


def test_flipped_value_in_tensor_data_says_checksum(kv, tmp_path):
    data = bytearray(kv.to_bytes())
    data[-5] ^= 0x10
    path = tmp_path / "flipped"
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptKVError, match="checksum"):
        AnchorKV.load(path)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"hello world, not a safetensors file",
        b"\x00" * 64,
        b"\xff" * 8 + b"{}",
        json.dumps({"format": "sac-rag/anchor-kv"}).encode(),
        "PK\x03\x04 zip".encode(),
    ],
    ids=["empty", "text", "zeros", "huge-header", "json", "zip"],
)
def test_non_safetensors_input_raises_corrupt(payload, tmp_path):
    with pytest.raises(CorruptKVError):
        AnchorKV.from_bytes(payload)
    path = tmp_path / "x.sackv"
    path.write_bytes(payload)
    with pytest.raises(CorruptKVError):
        AnchorKV.load(path)


def test_safetensors_without_our_metadata_raises_corrupt():
    plain = st_save({"keys": torch.zeros(1, 1, 1, 2)})
    with pytest.raises(CorruptKVError):
        AnchorKV.from_bytes(plain)
    tagged_but_empty = st_save({"x": torch.zeros(2)}, metadata={"format": "sac-rag/anchor-kv", "version": "1"})
    with pytest.raises(CorruptKVError):
        AnchorKV.from_bytes(tagged_but_empty)


def test_from_bytes_rejects_non_bytes():
    for bad in ("a string", 42, None, [1, 2]):
        with pytest.raises(CorruptKVError):
            AnchorKV.from_bytes(bad)  # type: ignore[arg-type]


def test_unknown_version_raises_kv_mismatch(kv):
    data = kv.to_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    header["__metadata__"]["version"] = "999"
    blob = json.dumps(header).encode()
    with pytest.raises(KVMismatchError, match="version"):
        AnchorKV.from_bytes(len(blob).to_bytes(8, "little") + blob + data[8 + n :])


def test_inconsistent_tensors_raise_corrupt(kv):
    from dataclasses import replace

    with pytest.raises(CorruptKVError):
        replace(kv, values=kv.values[:, :, :-1])
    with pytest.raises(CorruptKVError):
        replace(kv, positions=kv.positions[:-1])
    with pytest.raises(CorruptKVError):
        replace(kv, keys=kv.keys[0], values=kv.values[0])


def test_kv_from_another_model_raises_on_generate(make_sac):
    sac = make_sac("llama", seed=0)
    other = make_sac("llama", seed=1)
    assert other.fingerprint != sac.fingerprint
    foreign = other.compress("a passage compressed by another model")
    with pytest.raises(KVMismatchError):
        sac.generate([foreign, "question"], max_new_tokens=2)
    with pytest.raises(KVMismatchError):
        sac.generate(["before", sac.compress("mine"), foreign, "question"], max_new_tokens=2)
    with pytest.raises(KVMismatchError):
        AnchorKV.concat([sac.compress("mine"), foreign])


def test_kv_from_another_config_or_architecture_raises(make_sac):
    sac = make_sac("llama", ratio=5)
    with pytest.raises(KVMismatchError):
        sac.generate([make_sac("llama", ratio=3).compress("text"), "q"], max_new_tokens=1)
    with pytest.raises(KVMismatchError):
        sac.generate([make_sac("gemma3").compress("text"), "q"], max_new_tokens=1)


def test_kv_from_same_seed_model_is_accepted(make_sac):
    """Same weights + same config = same fingerprint: a KV outlives the process that made it."""
    a, b = make_sac("llama", seed=3), make_sac("llama", seed=3)
    assert a.fingerprint == b.fingerprint
    kv = AnchorKV.from_bytes(a.compress("shared passage").to_bytes(), expected_fingerprint=b.fingerprint)
    assert b.generate([kv, "q"], max_new_tokens=3).token_ids == a.generate([kv, "q"], max_new_tokens=3).token_ids


def test_placed_at_and_concat_validate(kv):
    for bad in (-1, 1.5, "3", None):
        with pytest.raises(InvalidInputError):
            kv.placed_at(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        AnchorKV.concat([])


def test_repr_and_sizes(kv):
    text = repr(kv)
    assert "num_anchors" in text and str(kv.num_anchors) in text
    assert kv.nbytes == 2 * kv.keys.numel() * kv.keys.element_size()
    assert kv.end == kv.num_tokens
    assert kv.to(dtype=torch.bfloat16).nbytes == kv.nbytes // 2
