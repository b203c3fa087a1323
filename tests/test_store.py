"""KVStore: byte-bounded LRU memory tier, directory tier, atomic writes, corruption, key validation, many processes."""

from __future__ import annotations

import builtins
import hashlib
import json
import multiprocessing as mp
import os
import pathlib
import tempfile

import pytest
import torch

from sac_rag import AnchorKV, InvalidInputError
from sac_rag.kv import Rotary
from sac_rag.store import KVStore, StoreStats, make_key

FP = "0123456789abcdef"


def synth_kv(seed: int = 0, anchors: int = 4, layers: int = 2, heads: int = 1, head_dim: int = 8, fingerprint: str = FP) -> AnchorKV:
    """A synthetic AnchorKV (no model): 2 * layers * heads * anchors * head_dim float32 values."""
    g = torch.Generator().manual_seed(seed)
    return AnchorKV(
        keys=torch.randn(layers, heads, anchors, head_dim, generator=g),
        values=torch.randn(layers, heads, anchors, head_dim, generator=g),
        positions=torch.arange(anchors, dtype=torch.long) * 5 + 3,
        num_tokens=anchors * 5,
        fingerprint=fingerprint,
        content_hash=hashlib.sha256(f"passage {seed}".encode()).hexdigest(),
        rotary=Rotary(inv_freq=torch.rand(1, head_dim // 2, generator=g), layer_type=torch.zeros(layers, dtype=torch.long)),
    )


def key_of(i: int, fingerprint: str = FP) -> str:
    return make_key(fingerprint, hashlib.sha256(f"passage {i}".encode()).hexdigest())


def assert_same_kv(a: AnchorKV, b: AnchorKV) -> None:
    assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values) and torch.equal(a.positions, b.positions)
    assert (a.num_tokens, a.start, a.fingerprint, a.content_hash) == (b.num_tokens, b.start, b.fingerprint, b.content_hash)
    assert torch.equal(a.rotary.inv_freq, b.rotary.inv_freq) and torch.equal(a.rotary.layer_type, b.rotary.layer_type)


def files_in(directory: pathlib.Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_synthetic_kv_size():
    kv = synth_kv()
    assert kv.nbytes == 2 * 2 * 1 * 4 * 8 * 4


# ---- memory tier ---------------------------------------------------------------------------------


def test_memory_lru_is_bounded_in_bytes():
    size = synth_kv().nbytes
    store = KVStore(max_bytes=3 * size)
    for i in range(3):
        store.put(key_of(i), synth_kv(i))
    assert store.stats().bytes == 3 * size and store.stats().evictions == 0
    assert store.get(key_of(0)) is not None  # 0 is now the most recently used; 1 is the least
    store.put(key_of(3), synth_kv(3))
    stats = store.stats()
    assert stats.entries == 3 and stats.bytes == 3 * size <= stats.max_bytes
    assert stats.evictions == 1
    assert store.get(key_of(1)) is None, "the least recently used entry is evicted"
    for i in (0, 2, 3):
        assert_same_kv(store.get(key_of(i)), synth_kv(i))
    # Bigger entries push out as many as needed to stay within the budget.
    store.put(key_of(9), synth_kv(9, anchors=8))  # two entries' worth
    stats = store.stats()
    assert stats.bytes <= stats.max_bytes and stats.evictions == 3 and stats.entries == 2
    assert key_of(9) in store


def test_hits_misses_and_bytes_are_reported():
    store = KVStore(max_bytes=1 << 20)
    assert store.stats() == StoreStats(hits=0, misses=0, disk_hits=0, entries=0, bytes=0, max_bytes=1 << 20, evictions=0, corrupt=0)
    assert store.stats().hit_rate == 0.0
    kv = synth_kv(1)
    store.put(key_of(1), kv, {"text": "passage 1"})
    assert store.get(key_of(1)) is kv, "the memory tier hands back the stored object"
    assert store.get_entry(key_of(1)) == (kv, {"text": "passage 1"})
    assert store.get(key_of(2)) is None
    stats = store.stats()
    assert (stats.hits, stats.misses, stats.disk_hits, stats.entries, stats.bytes) == (2, 1, 0, 1, kv.nbytes)
    assert stats.hit_rate == pytest.approx(2 / 3)
    store.put(key_of(1), kv)  # replacing an entry does not count its bytes twice
    assert store.stats().bytes == kv.nbytes and store.stats().entries == 1
    store.clear_memory()
    assert store.stats().bytes == 0 and store.stats().entries == 0 and store.get(key_of(1)) is None


def test_entry_larger_than_the_budget_goes_to_disk_only(tmp_path):
    kv = synth_kv(1)
    store = KVStore(max_bytes=kv.nbytes - 1, directory=tmp_path)
    store.put(key_of(1), kv, {"text": "t"})
    stats = store.stats()
    assert stats.entries == 0 and stats.bytes == 0 and stats.evictions == 0
    assert f"{key_of(1)}.safetensors" in files_in(tmp_path)
    got = store.get_entry(key_of(1))
    assert got is not None and got[1] == {"text": "t"}
    assert_same_kv(got[0], kv)
    assert store.stats().disk_hits == 1 and store.stats().entries == 0, "still not kept in memory"
    # Without a directory such an entry is simply not kept.
    mem_only = KVStore(max_bytes=kv.nbytes - 1)
    mem_only.put(key_of(1), kv)
    assert mem_only.get(key_of(1)) is None and mem_only.stats().bytes == 0


def test_replacing_an_entry_with_one_too_large_drops_the_old_bytes():
    small, big = synth_kv(1, anchors=2), synth_kv(1, anchors=16)
    store = KVStore(max_bytes=small.nbytes)
    store.put(key_of(1), small)
    store.put(key_of(1), big)
    assert store.stats().bytes == 0 and store.get(key_of(1)) is None


def test_zero_budget_and_bad_budget():
    store = KVStore(max_bytes=0)
    store.put(key_of(1), synth_kv(1))
    assert store.get(key_of(1)) is None and store.stats().bytes == 0
    for bad in (-1, 1.5, "10", None):
        with pytest.raises(InvalidInputError):
            KVStore(max_bytes=bad)


def test_put_takes_only_anchor_kvs():
    with pytest.raises(InvalidInputError):
        KVStore().put(key_of(1), {"keys": torch.zeros(1)})


# ---- directory tier ------------------------------------------------------------------------------


def test_directory_round_trip(tmp_path):
    first = KVStore(directory=tmp_path / "kv")
    kvs = {i: synth_kv(i) for i in range(3)}
    for i, kv in kvs.items():
        first.put(key_of(i), kv, {"text": f"passage {i}", "n": i})
    assert files_in(tmp_path / "kv") == sorted([f"{key_of(i)}.safetensors" for i in kvs] + [f"{key_of(i)}.json" for i in kvs])

    second = KVStore(directory=tmp_path / "kv")  # e.g. another process, or after a restart
    assert second.stats().entries == 0
    for i, kv in kvs.items():
        assert key_of(i) in second
        got, meta = second.get_entry(key_of(i), expected_fingerprint=FP)
        assert_same_kv(got, kv)
        assert meta == {"text": f"passage {i}", "n": i}
    assert key_of(7) not in second and second.get(key_of(7)) is None
    stats = second.stats()
    assert (stats.hits, stats.disk_hits, stats.misses, stats.entries) == (3, 3, 1, 3)
    second.get(key_of(0))
    assert second.stats().disk_hits == 3 and second.stats().hits == 4, "the second read comes from memory"


def test_clear_memory_falls_back_to_disk(tmp_path):
    store = KVStore(directory=tmp_path)
    store.put(key_of(1), synth_kv(1))
    store.clear_memory()
    assert_same_kv(store.get(key_of(1)), synth_kv(1))
    assert store.stats().disk_hits == 1


def test_wrong_fingerprint_on_disk_is_a_miss(tmp_path):
    store = KVStore(directory=tmp_path)
    store.put(key_of(1), synth_kv(1))
    other = KVStore(directory=tmp_path)
    assert other.get(key_of(1), expected_fingerprint="f" * 16) is None
    assert other.stats().misses == 1


def test_missing_meta_file_is_an_empty_meta(tmp_path):
    store = KVStore(directory=tmp_path)
    store.put(key_of(1), synth_kv(1), {"text": "x"})
    (tmp_path / f"{key_of(1)}.json").unlink()
    got = KVStore(directory=tmp_path).get_entry(key_of(1))
    assert got is not None and got[1] == {}


# ---- atomic writes -------------------------------------------------------------------------------


@pytest.mark.parametrize("fail_on", ["any", ".safetensors", ".json"])
def test_a_crashed_write_leaves_no_visible_entry(tmp_path, monkeypatch, fail_on):
    store = KVStore(directory=tmp_path)
    store.put(key_of(0), synth_kv(0), {"text": "kept"})
    before = files_in(tmp_path)
    real_replace = os.replace

    def crash(src, dst, *args, **kwargs):
        if fail_on == "any" or str(dst).endswith(fail_on):
            raise OSError("simulated crash during rename")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        store.put(key_of(1), synth_kv(1), {"text": "lost"})
    monkeypatch.undo()

    names = files_in(tmp_path)
    assert f"{key_of(1)}.safetensors" not in names, "no entry file for the failed write"
    assert not [n for n in names if n.endswith(".tmp")], f"temporary files left behind: {names}"
    assert set(names) - set(before) <= {f"{key_of(1)}.json"}, "at most the metadata file, which alone is not an entry"
    for s in (store, KVStore(directory=tmp_path)):
        assert key_of(1) not in s
        assert s.get(key_of(1)) is None
    assert_same_kv(KVStore(directory=tmp_path).get(key_of(0)), synth_kv(0))
    # A later successful write completes the entry.
    store.put(key_of(1), synth_kv(1), {"text": "second try"})
    assert KVStore(directory=tmp_path).get_entry(key_of(1))[1] == {"text": "second try"}


def test_a_crash_while_writing_data_leaves_no_partial_file(tmp_path, monkeypatch):
    store = KVStore(directory=tmp_path)

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        store.put(key_of(1), synth_kv(1))
    monkeypatch.undo()
    assert files_in(tmp_path) == []
    assert store.get(key_of(1)) is None


def test_writes_go_through_a_temporary_file_in_the_same_directory(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace

    def spy(src, dst, *args, **kwargs):
        seen.append((pathlib.Path(src), pathlib.Path(dst)))
        assert pathlib.Path(src).exists() and not pathlib.Path(dst).exists()
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", spy)
    KVStore(directory=tmp_path).put(key_of(1), synth_kv(1), {"text": "x"})
    assert [d.name for _, d in seen] == [f"{key_of(1)}.json", f"{key_of(1)}.safetensors"], "the KV file is renamed last"
    assert all(s.parent == d.parent == tmp_path and s.name.endswith(".tmp") for s, d in seen)


# ---- corruption ----------------------------------------------------------------------------------


def _truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _flip_last(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0x01])


def _flip_middle(data: bytes) -> bytes:
    i = len(data) - 200
    return data[:i] + bytes([data[i] ^ 0x80]) + data[i + 1 :]


def _flip_header(data: bytes) -> bytes:
    i = 8 + 20  # inside the JSON header
    return data[:i] + bytes([data[i] ^ 0x04]) + data[i + 1 :]


def _flip_length(data: bytes) -> bytes:
    return bytes([data[0] ^ 0x10]) + data[1:]


@pytest.mark.parametrize(
    "damage",
    [_truncate, _flip_last, _flip_middle, _flip_header, _flip_length, lambda d: b"", lambda d: b"\x00" * 64, lambda d: d[:7]],
    ids=["truncated", "last-bit", "data-bit", "header-bit", "length-bit", "empty", "zeros", "tiny"],
)
def test_a_damaged_file_is_a_counted_miss_and_is_deleted(tmp_path, damage):
    KVStore(directory=tmp_path).put(key_of(1), synth_kv(1), {"text": "t"})
    path = tmp_path / f"{key_of(1)}.safetensors"
    path.write_bytes(damage(path.read_bytes()))

    store = KVStore(directory=tmp_path)
    assert store.get(key_of(1)) is None
    stats = store.stats()
    assert (stats.misses, stats.corrupt, stats.hits, stats.entries) == (1, 1, 0, 0)
    assert not path.exists(), "the damaged file is removed"
    assert key_of(1) not in store
    assert store.get(key_of(1)) is None and store.stats().corrupt == 1, "a second read is a plain miss"
    # The key can be written again.
    store.put(key_of(1), synth_kv(1))
    assert_same_kv(KVStore(directory=tmp_path).get(key_of(1)), synth_kv(1))


def test_a_damaged_meta_file_is_a_counted_miss(tmp_path):
    KVStore(directory=tmp_path).put(key_of(1), synth_kv(1), {"text": "t"})
    (tmp_path / f"{key_of(1)}.json").write_bytes(b'{"text": "t')
    store = KVStore(directory=tmp_path)
    assert store.get(key_of(1)) is None
    assert store.stats().corrupt == 1
    assert key_of(1) not in store


# ---- key validation ------------------------------------------------------------------------------

VALID = key_of(1)
BAD_KEYS = [
    "../x",
    "../" + VALID[3:],
    VALID[:17] + "../../" + VALID[23:],
    "/etc/passwd",
    VALID.upper(),
    VALID[:-1],
    VALID + "0",
    VALID + "\n",
    "\n" + VALID,
    VALID[:16] + "_" + VALID[17:],
    VALID.replace("-", "/"),
    "",
    "x" * 81,
]


@pytest.mark.parametrize("bad", BAD_KEYS, ids=lambda k: repr(k)[:40])
@pytest.mark.parametrize("with_directory", [True, False], ids=["dir", "memory"])
def test_invalid_keys_raise_and_never_touch_the_file_system(tmp_path, monkeypatch, bad, with_directory):
    directory = tmp_path / "store"
    store = KVStore(directory=directory if with_directory else None)
    before = sorted(str(p) for p in tmp_path.rglob("*"))

    touched = []

    def forbidden(*args, **kwargs):
        touched.append(args)
        raise PermissionError("file system touched")

    calls = {
        "put": lambda: store.put(bad, synth_kv(1)),
        "get": lambda: store.get(bad),
        "get_entry": lambda: store.get_entry(bad),
        "contains": lambda: bad in store,
    }
    outcomes = {}
    with monkeypatch.context() as m:  # patched only around the store's calls
        for name in ("read_bytes", "read_text", "write_bytes", "exists", "unlink", "open", "stat", "is_file"):
            m.setattr(pathlib.Path, name, forbidden)
        for mod, name in ((builtins, "open"), (os, "open"), (os, "replace"), (os, "stat"), (tempfile, "mkstemp")):
            m.setattr(mod, name, forbidden)
        for what, call in calls.items():
            try:
                outcomes[what] = call()
            except Exception as exc:  # noqa: BLE001 - checked below
                outcomes[what] = exc
    assert touched == [], f"file system touched for key {bad!r}"
    assert {k: type(v).__name__ for k, v in outcomes.items()} == dict.fromkeys(calls, "InvalidInputError")
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before
    assert store.stats().entries == 0


def test_make_key_validates():
    assert make_key(FP, "a" * 64) == FP + "-" + "a" * 64
    for fp, h in [(FP, "A" * 64), (FP[:-1], "a" * 64), (FP, "a" * 63), ("../" + FP[3:], "a" * 64), (FP, "a" * 64 + "\n")]:
        with pytest.raises(InvalidInputError):
            make_key(fp, h)


# ---- several processes over one directory --------------------------------------------------------

PASSAGES = [f"Passage number {i}: the quick brown fox {i * 7} jumps over {i % 5} lazy dogs." for i in range(18)]


def _worker(directory: str, indices: list[int], barrier, results) -> None:
    torch.set_num_threads(1)
    from sac_rag.compressor import SACCompressor
    from sac_rag.testing import tiny_sac

    compressor = SACCompressor(tiny_sac("llama", seed=0), KVStore(max_bytes=1 << 20, directory=directory), batch_size=2)
    barrier.wait(timeout=120)
    cached = []
    for rnd in range(3):
        order = indices if rnd % 2 == 0 else indices[::-1]
        for j in range(0, len(order), 3):
            cached += [p.cached for p in compressor.compress([PASSAGES[i] for i in order[j : j + 3]])]
        compressor.store.clear_memory()  # the next round reads what both processes wrote
    prompt = " ".join(p.marker for p in compressor.compress([PASSAGES[i] for i in indices])) + " Q:"
    kvs = [s for s in compressor.segments(prompt) if isinstance(s, AnchorKV)]
    results.put((indices[0], len(kvs), sum(cached), len(cached), compressor.store.stats().corrupt))


def test_two_processes_share_one_directory(tmp_path):
    from sac_rag.compressor import SACCompressor
    from sac_rag.testing import tiny_sac

    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    mine = [list(range(0, 12)), list(range(6, 18))]  # 6 passages in common
    procs = [ctx.Process(target=_worker, args=(str(tmp_path), idx, barrier, results)) for idx in mine]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    assert [p.exitcode for p in procs] == [0, 0]
    reports = sorted(results.get(timeout=10) for _ in procs)
    for (first, n_kvs, n_cached, n_calls, corrupt), idx in zip(reports, mine):
        assert n_kvs == len(idx)
        assert n_cached >= 2 * len(idx), "rounds 2 and 3 find everything on disk"
        assert corrupt == 0

    names = files_in(tmp_path)
    assert not [n for n in names if not n.endswith((".safetensors", ".json"))], f"stray files: {names}"
    sac = tiny_sac("llama", seed=0)
    reference = SACCompressor(sac)
    expected = {p.key: (text, p) for text, p in zip(PASSAGES, reference.compress(PASSAGES))}
    kv_files = [n for n in names if n.endswith(".safetensors")]
    assert len(kv_files) == len(PASSAGES) and len(names) == 2 * len(PASSAGES)
    for name in kv_files:
        key = name[: -len(".safetensors")]
        kv = AnchorKV.load(tmp_path / name, expected_fingerprint=sac.fingerprint)  # verifies the checksum
        text, ref = expected[key]
        meta = json.loads((tmp_path / f"{key}.json").read_text(encoding="utf-8"))
        assert meta["text"] == text
        assert kv.content_hash == hashlib.sha256(text.encode()).hexdigest() == key.split("-")[1]
        want = reference.store.get(key)  # same model, other batching: equal up to float rounding
        assert torch.equal(kv.positions, want.positions) and kv.num_tokens == want.num_tokens
        assert torch.allclose(kv.keys, want.keys, atol=1e-5) and torch.allclose(kv.values, want.values, atol=1e-5)
    fresh = KVStore(directory=tmp_path)
    assert all(fresh.get(k) is not None for k in expected) and fresh.stats().corrupt == 0


def test_a_valid_file_under_another_key_is_not_served(tmp_path):
    """Copying one entry's file to another key's name must not make the store serve it."""
    import shutil

    from sac_rag import KVStore
    from sac_rag.testing import tiny_sac

    sac = tiny_sac()
    store = KVStore(directory=tmp_path)
    kv_a, kv_b = sac.compress_batch(["first passage text", "second passage text"])
    key_a, key_b = f"{sac.fingerprint}-{kv_a.content_hash}", f"{sac.fingerprint}-{kv_b.content_hash}"
    store.put(key_a, kv_a)
    shutil.copy(tmp_path / f"{key_a}.safetensors", tmp_path / f"{key_b}.safetensors")
    fresh = KVStore(directory=tmp_path)
    assert fresh.get(key_b) is None
    assert fresh.stats().corrupt == 1
    assert not (tmp_path / f"{key_b}.safetensors").exists()
    assert fresh.get(key_a) is not None
