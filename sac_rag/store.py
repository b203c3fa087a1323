"""KVStore: compressed passages by key, in a byte-bounded in-memory LRU over an optional directory.

Keys name everything a KV depends on: ``<model fingerprint>-<sha256 of the
passage text>``; they are validated before they touch the file system (no
path traversal). On disk each entry is ``<key>.safetensors`` (the AnchorKV,
with its checksum) and ``<key>.json`` (the passage text and metadata), each
written to a temporary file and renamed into place, so a crashed writer
never leaves half an entry and several processes can share one directory.
A file that fails its checksum is treated as a miss, deleted and counted.
Temporary files a killed writer left behind are removed when a store opens
the directory, once they are older than ``STALE_TMP_SECONDS``.

This module knows keys, bytes and files; it does not compress anything.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from .errors import CorruptKVError, InvalidInputError, KVMismatchError
from .fileio import write_atomic
from .kv import AnchorKV

__all__ = ["KVStore", "StoreStats", "make_key"]

_KEY = re.compile(r"[0-9a-f]{16}-[0-9a-f]{64}")  # used with fullmatch: "$" would accept a trailing newline
_TMP = re.compile(r"\.[0-9a-f]{16}-[0-9a-f]{64}\.(?:safetensors|json)\..+\.tmp")  # what write_atomic leaves if killed
STALE_TMP_SECONDS = 600  # no write takes this long: an older temporary file belongs to a writer that died


def _check_key(key) -> str:
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise InvalidInputError(f"not a valid store key: {str(key)[:100]!r}")
    return key


def make_key(fingerprint: str, content_hash: str) -> str:
    key = f"{fingerprint}-{content_hash}"
    if not _KEY.fullmatch(key):
        raise InvalidInputError(f"not a valid store key: {key[:100]!r}")
    return key


@dataclass(frozen=True)
class StoreStats:
    hits: int
    misses: int
    disk_hits: int
    entries: int
    bytes: int
    max_bytes: int
    evictions: int
    corrupt: int

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class KVStore:
    """Thread-safe store of AnchorKVs. ``max_bytes`` bounds memory; ``directory`` adds a persistent tier."""

    def __init__(self, max_bytes: int = 1 << 30, directory: str | os.PathLike | None = None) -> None:
        if not isinstance(max_bytes, int) or max_bytes < 0:
            raise InvalidInputError(f"max_bytes must be an int >= 0, got {max_bytes!r}")
        self.max_bytes = max_bytes
        self.directory = Path(directory) if directory is not None else None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.remove_stale_temporaries()
        self._mem: OrderedDict[str, tuple[AnchorKV, dict]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.RLock()
        self._hits = self._misses = self._disk_hits = self._evictions = self._corrupt = 0

    # ---- paths -------------------------------------------------------------------------------
    def remove_stale_temporaries(self, older_than: float = STALE_TMP_SECONDS) -> int:
        """Delete temporary files of writers that died mid-write (older than ``older_than`` seconds); returns how many."""
        if self.directory is None:
            return 0
        cutoff, removed = time.time() - older_than, 0
        with os.scandir(self.directory) as entries:
            for entry in entries:
                if entry.name.startswith(".") and _TMP.fullmatch(entry.name):
                    try:
                        if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                            os.unlink(entry.path)
                            removed += 1
                    except OSError:  # another process removed or renamed it first
                        pass
        return removed

    def _paths(self, key: str) -> tuple[Path, Path]:
        _check_key(key)
        assert self.directory is not None
        return self.directory / f"{key}.safetensors", self.directory / f"{key}.json"

    # ---- memory tier -------------------------------------------------------------------------
    def _remember(self, key: str, kv: AnchorKV, meta: dict) -> None:
        if key in self._mem:
            self._bytes -= self._mem.pop(key)[0].nbytes
        if kv.nbytes > self.max_bytes:
            return  # larger than the whole budget: disk only
        self._mem[key] = (kv, meta)
        self._bytes += kv.nbytes
        while self._bytes > self.max_bytes:
            _, (old, _) = self._mem.popitem(last=False)
            self._bytes -= old.nbytes
            self._evictions += 1

    # ---- public ------------------------------------------------------------------------------
    def put(self, key: str, kv: AnchorKV, meta: dict | None = None) -> None:
        """Store ``kv`` (and JSON-able ``meta``, e.g. the passage text) under ``key``."""
        if not isinstance(kv, AnchorKV):
            raise InvalidInputError(f"KVStore.put takes an AnchorKV, got {type(kv).__name__}")
        _check_key(key)
        meta = dict(meta or {})
        with self._lock:
            if self.directory is not None:
                kv_path, meta_path = self._paths(key)
                try:
                    meta_bytes = json.dumps(meta, ensure_ascii=False).encode("utf-8")
                except (TypeError, ValueError) as exc:  # not JSON-able, or text with lone surrogates
                    raise InvalidInputError(f"KVStore.put: meta must be JSON-able, with valid text: {exc}") from exc
                write_atomic(meta_path, meta_bytes)
                write_atomic(kv_path, kv.to_bytes())  # written last: its presence marks a complete entry
            self._remember(key, kv, meta)

    def get(self, key: str, *, expected_fingerprint: str | None = None) -> AnchorKV | None:
        """The KV under ``key``, or None. A damaged file counts as a miss and is removed."""
        entry = self.get_entry(key, expected_fingerprint=expected_fingerprint)
        return entry[0] if entry else None

    def get_entry(self, key: str, *, expected_fingerprint: str | None = None) -> tuple[AnchorKV, dict] | None:
        _check_key(key)
        with self._lock:
            if key in self._mem:
                self._mem.move_to_end(key)
                self._hits += 1
                return self._mem[key]
            if self.directory is None:
                self._misses += 1
                return None
            kv_path, meta_path = self._paths(key)
            try:
                data = kv_path.read_bytes()
            except FileNotFoundError:
                self._misses += 1
                return None
            try:
                kv = AnchorKV.from_bytes(data, expected_fingerprint=expected_fingerprint)
                meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.exists() else {}
                if f"{kv.fingerprint}-{kv.content_hash}" != key:  # a valid file, but not the one this key names
                    raise CorruptKVError(f"entry {key} holds the KV of {kv.fingerprint}-{kv.content_hash}")
            except (CorruptKVError, KVMismatchError, json.JSONDecodeError, UnicodeDecodeError):
                self._corrupt += 1
                self._misses += 1
                kv_path.unlink(missing_ok=True)
                meta_path.unlink(missing_ok=True)
                return None
            self._hits += 1
            self._disk_hits += 1
            self._remember(key, kv, meta)
            return kv, meta

    def __contains__(self, key: str) -> bool:
        _check_key(key)
        with self._lock:
            if key in self._mem:
                return True
            return self.directory is not None and self._paths(key)[0].exists()

    def stats(self) -> StoreStats:
        with self._lock:
            return StoreStats(self._hits, self._misses, self._disk_hits, len(self._mem), self._bytes, self.max_bytes,
                              self._evictions, self._corrupt)

    def clear_memory(self) -> None:
        """Drop the in-memory tier (the directory stays)."""
        with self._lock:
            self._mem.clear()
            self._bytes = 0
