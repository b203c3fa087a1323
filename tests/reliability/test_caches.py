"""Corrupted caches and killed writers: a damaged, mismatched or forged KV file in a KVStore directory is never
read as if it were the passage; SACCompressor recomputes the KV, equal to a fresh compression. A writer killed
with SIGKILL at random moments never leaves an entry a fresh store would serve half-written."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from reliability._kill_writer import FINGERPRINT, entry
from sac_rag import AnchorKV, KVStore, SACCompressor
from sac_rag.kv import _file_checksum
from sac_rag.store import STALE_TMP_SECONDS
from sac_rag.testing import tiny_sac

TEXT = "Mount Everest is the highest mountain above sea level. It lies in the Himalayas, on the border of Nepal."
OTHER = "Honey never spoils. Jars of it were found in ancient Egyptian tombs."
WRITER = Path(__file__).with_name("_kill_writer.py")


def _header(data: bytes) -> dict:
    return json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])["__metadata__"]


def resave(data: bytes, change=None, **meta) -> bytes:
    """Rewrite a KV file with altered tensors/metadata and a VALID checksum (what a buggy or hostile writer makes)."""
    tensors = {k: v.clone() for k, v in st_load(data).items()}
    metadata = {**_header(data), **meta}
    if change is not None:
        change(tensors)
    metadata["checksum"] = _file_checksum(tensors, metadata)
    return st_save(tensors, metadata=metadata)


def _flip(data: bytes, i: int, bit: int = 0x01) -> bytes:
    return data[:i] + bytes([data[i] ^ bit]) + data[i + 1 :]


def _halve_head_dim(t):
    for name in ("keys", "values"):
        t[name] = t[name][..., : t[name].shape[-1] // 2].contiguous()


def _drop_anchor(t):
    for name in ("keys", "values"):
        t[name] = t[name][:, :, :-1].contiguous()
    t["positions"] = t["positions"][:-1].contiguous()


def _extra_layer(t):
    for name in ("keys", "values"):
        t[name] = torch.cat([t[name], t[name][:1]]).contiguous()
    t["rotary_layer_type"] = torch.cat([t["rotary_layer_type"], t["rotary_layer_type"][:1]]).contiguous()


def _nan(t):
    t["values"][0, 0, 0, 0] = float("nan")


def _shift_positions(t):
    t["positions"] = (t["positions"] + 1).contiguous()


def _other_rotary(t):
    t["rotary_inv_freq"] = (t["rotary_inv_freq"] * 2).contiguous()


@pytest.fixture(scope="module")
def others(rsac):
    """KV files for TEXT from another base model and from another ratio, and for another passage."""
    return {
        "model": tiny_sac("llama", seed=1, ratio=4, max_input_tokens=300).compress(TEXT).to_bytes(),
        "ratio": tiny_sac("llama", seed=0, ratio=8, max_input_tokens=300).compress(TEXT).to_bytes(),
        "passage": rsac.compress(OTHER).to_bytes(),
    }


FAULTS = {
    "truncated to half": lambda d, o: d[: len(d) // 2],
    "truncated inside the header": lambda d, o: d[:20],
    "truncated by one byte": lambda d, o: d[:-1],
    "bit flipped in tensor data": lambda d, o: _flip(d, len(d) - 37, 0x10),
    "bit flipped in the JSON header": lambda d, o: _flip(d, 8 + 30, 0x04),
    "bit flipped in the length prefix": lambda d, o: _flip(d, 1, 0x01),
    "empty file": lambda d, o: b"",
    "random bytes": lambda d, o: random.Random(1).randbytes(len(d)),
    "wrong shape: head_dim halved (valid checksum)": lambda d, o: resave(d, _halve_head_dim),
    "wrong shape: one anchor dropped (valid checksum)": lambda d, o: resave(d, _drop_anchor),
    "wrong shape: an extra layer (valid checksum)": lambda d, o: resave(d, _extra_layer),
    "wrong anchor positions (valid checksum)": lambda d, o: resave(d, _shift_positions),
    "wrong rotary table (valid checksum)": lambda d, o: resave(d, _other_rotary),
    "NaN in values (valid checksum)": lambda d, o: resave(d, _nan),
    "wrong token count (valid checksum)": lambda d, o: resave(d, num_tokens="7"),
    "wrong model: KV of another base model": lambda d, o: o["model"],
    "wrong model: KV of another ratio": lambda d, o: o["ratio"],
    "wrong model: fingerprint field rewritten (valid checksum)": lambda d, o: resave(d, fingerprint="0" * 16),
    "wrong version (valid checksum)": lambda d, o: resave(d, version="0"),
    "wrong format name (valid checksum)": lambda d, o: resave(d, format="something-else"),
    "another passage's KV under this key": lambda d, o: o["passage"],
}


def _counting(monkeypatch, rsac) -> list:
    calls: list = []
    real = rsac.compress_batch

    def spy(texts, **kwargs):
        calls.append(list(texts))
        return real(texts, **kwargs)

    monkeypatch.setattr(rsac, "compress_batch", spy)
    return calls


def _assert_fresh(kv: AnchorKV, rsac) -> None:
    fresh = rsac.compress(TEXT)
    assert torch.equal(kv.keys, fresh.keys) and torch.equal(kv.values, fresh.values)
    assert torch.equal(kv.positions, fresh.positions) and kv.num_tokens == fresh.num_tokens
    assert kv.fingerprint == rsac.fingerprint and kv.content_hash == fresh.content_hash


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_bad_kv_file_is_detected_and_recomputed(fault, rsac, others, tmp_path, monkeypatch, report):
    directory = tmp_path / "kv"
    first = SACCompressor(rsac, KVStore(directory=directory))
    [p] = first.compress([TEXT])
    path = directory / f"{p.key}.safetensors"
    good = path.read_bytes()
    reference = rsac.generate([rsac.compress(TEXT), " Where?"], max_new_tokens=5).token_ids

    # Path 1: a new process (fresh memory tier) compresses the same passage.
    path.write_bytes(FAULTS[fault](good, others))
    calls = _counting(monkeypatch, rsac)
    second = SACCompressor(rsac, KVStore(directory=directory))
    [q] = second.compress([TEXT])
    assert not q.cached and calls == [[TEXT]], "the bad file was not used: the passage was compressed again"
    _assert_fresh(second.store.get(q.key), rsac)
    _assert_fresh(AnchorKV.load(path, expected_fingerprint=rsac.fingerprint), rsac)  # and the file is good again
    assert second.generate(f"{q.marker} Where?", max_new_tokens=5).token_ids == reference

    # Path 2: a marker already issued, whose KV left memory and whose file went bad, is resolved.
    path.write_bytes(FAULTS[fault](good, others))
    first.store.clear_memory()
    calls.clear()
    [kv] = [s for s in first.segments(f"Context: {p.marker} Where?") if isinstance(s, AnchorKV)]
    assert calls == [[TEXT]]
    _assert_fresh(kv, rsac)
    assert first.generate(f"{p.marker} Where?", max_new_tokens=5).token_ids == reference
    report.record("caches", f"{fault} (compress, marker resolution)", "detected; recomputed = fresh compress", 2)


def test_a_damaged_metadata_file_is_recomputed(rsac, tmp_path, monkeypatch, report):
    directory = tmp_path / "kv"
    [p] = SACCompressor(rsac, KVStore(directory=directory)).compress([TEXT])
    (directory / f"{p.key}.json").write_bytes(b'{"text": "trunc')
    calls = _counting(monkeypatch, rsac)
    comp = SACCompressor(rsac, KVStore(directory=directory))
    [q] = comp.compress([TEXT])
    assert not q.cached and calls == [[TEXT]]
    _assert_fresh(comp.store.get(q.key), rsac)
    assert json.loads((directory / f"{p.key}.json").read_text())["text"] == TEXT
    report.record("caches", "damaged .json metadata file", "detected; recomputed = fresh compress")


def test_file_checks_also_hold_for_a_gemma_shaped_model(tmp_path, monkeypatch, report):
    """The shape check reads heads and head_dim from the model's config: also right for Gemma 3 (explicit head_dim)."""
    sac = tiny_sac("gemma3", ratio=4)
    comp = SACCompressor(sac, KVStore(directory=tmp_path))
    [p] = comp.compress([TEXT])
    path = tmp_path / f"{p.key}.safetensors"
    good = path.read_bytes()
    for name in ("wrong shape: head_dim halved (valid checksum)", "wrong shape: one anchor dropped (valid checksum)"):
        path.write_bytes(FAULTS[name](good, {}))
        fresh = SACCompressor(sac, KVStore(directory=tmp_path))
        [q] = fresh.compress([TEXT])
        assert not q.cached
        assert torch.equal(fresh.store.get(q.key).keys, sac.compress(TEXT).keys)
        report.record("caches", f"{name}, Gemma 3-shaped model", "detected; recomputed = fresh compress")
    # And a sound file is used as it is.
    [r] = SACCompressor(sac, KVStore(directory=tmp_path)).compress([TEXT])
    assert r.cached
    report.record("caches", "sound file (control)", "served from disk, not recomputed")


# ---- killed writers -------------------------------------------------------------------------------


def _verify_directory(directory: Path) -> tuple[int, int]:
    """Every entry a fresh store serves loads, passes its checksum and equals what was written."""
    store = KVStore(directory=directory)
    served = 0
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".safetensors"):
            continue
        key = name[: -len(".safetensors")]
        got = store.get_entry(key, expected_fingerprint=FINGERPRINT)
        assert got is not None, f"{name}: a complete-looking entry was not servable"
        kv, meta = got
        want, want_meta = entry(meta["i"])
        assert meta == want_meta
        assert torch.equal(kv.keys, want.keys) and torch.equal(kv.values, want.values)
        assert torch.equal(kv.positions, want.positions) and kv.content_hash == want.content_hash
        served += 1
    assert store.stats().corrupt == 0
    return served, store.stats().disk_hits


def test_writers_killed_with_sigkill_never_leave_a_servable_half_entry(tmp_path, report):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    directory = tmp_path / "shared"
    directory.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    kills = verified_reads = 0
    for round_ in range(2):
        procs = [
            subprocess.Popen([sys.executable, str(WRITER), str(directory), str(w + 3 * round_), "3"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            for w in range(3)
        ]
        try:
            for p in procs:
                line = p.stdout.readline().strip()
                assert line == "ready", (line, p.stderr.read() if p.poll() is not None else "")
            start = time.monotonic()
            kill_at = {p.pid: start + rng.uniform(0.05, 1.2) for p in procs}
            alive = list(procs)
            while alive:
                # Read while they write: every entry served now must already be whole.
                verified_reads += _verify_directory(directory)[0]
                for p in list(alive):
                    if time.monotonic() >= kill_at[p.pid]:
                        assert p.poll() is None, f"writer died on its own: {p.stderr.read()}"
                        os.kill(p.pid, signal.SIGKILL)
                        assert p.wait(timeout=30) == -signal.SIGKILL
                        kills += 1
                        alive.remove(p)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            for p in procs:
                p.stdout.close()
                p.stderr.close()

    served, _ = _verify_directory(directory)
    names = os.listdir(directory)
    temporaries = [n for n in names if n.endswith(".tmp")]
    kv_keys = {n[: -len(".safetensors")] for n in names if n.endswith(".safetensors")}
    orphans = [n for n in names if n.endswith(".json") and n[: -len(".json")] not in kv_keys]
    assert served > 0 and kills == 6
    # A fresh store leaves young temporaries alone (a live writer may own them) ...
    KVStore(directory=directory)
    assert sorted(n for n in os.listdir(directory) if n.endswith(".tmp")) == sorted(temporaries)
    # ... and removes them once they are stale; the entries stay servable.
    assert KVStore(directory=directory).remove_stale_temporaries(older_than=0) == len(temporaries)
    assert not [n for n in os.listdir(directory) if n.endswith(".tmp")]
    assert _verify_directory(directory)[0] == served

    case = "writer processes killed with SIGKILL at random moments (2 rounds x 3 writers, ~512 KiB entries)"
    report.record("caches", case, "no half-written entry ever served", kills)
    report.note("caches", case, f"{verified_reads} reads verified while writers ran, {served} entries verified after; "
                f"{len(temporaries)} temporary files left by kills mid-write (removed as stale), {len(orphans)} "
                f"metadata files without a KV (not an entry); random seed {seed}")


def test_stale_temporary_files_are_removed_when_a_store_opens(tmp_path, report):
    key = "0123456789abcdef-" + "ab" * 32
    old = time.time() - STALE_TMP_SECONDS - 60
    stale = [tmp_path / f".{key}.safetensors.k2j3h4.tmp", tmp_path / f".{key}.json.x9y8.tmp"]
    young = [tmp_path / f".{key}.safetensors.abcd.tmp"]
    foreign = [tmp_path / ".notes.tmp", tmp_path / "report.tmp", tmp_path / f"{key}.safetensors.tmp"]
    for p in stale + young + foreign:
        p.write_bytes(b"partial")
    for p in stale + foreign:
        os.utime(p, (old, old))
    store = KVStore(directory=tmp_path)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(p.name for p in young + foreign), "only stale temporaries of the store's own writes go"
    assert store.remove_stale_temporaries() == 0 and KVStore(max_bytes=1).remove_stale_temporaries() == 0
    report.record("caches", "stale temporary files in the directory when a store opens", "removed", len(stale))
    report.record("caches", "young temporaries / files the store did not write", "left alone", len(young + foreign))
