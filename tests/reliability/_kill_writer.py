"""A writer for the SIGKILL test: puts entries into a KVStore directory in a loop until it is killed.

Run as ``python _kill_writer.py <directory> <first index> <stride>``; prints ``ready`` once it can write.
Entries are deterministic in their index (see :func:`entry`), so a reader can verify every one it finds.
"""

from __future__ import annotations

import hashlib
import sys

import torch

from sac_rag.kv import AnchorKV, Rotary
from sac_rag.store import KVStore, make_key

FINGERPRINT = "feedfacecafebeef"
NUM_KEYS = 40  # writers cycle over these keys, so entries are also replaced while readers read them


def key_of(i: int) -> str:
    return make_key(FINGERPRINT, hashlib.sha256(f"passage {i % NUM_KEYS}".encode()).hexdigest())


def entry(i: int) -> tuple[AnchorKV, dict]:
    """About 512 KiB of KV, so a write takes long enough for a kill to land in the middle of one."""
    g = torch.Generator().manual_seed(i % NUM_KEYS)
    layers, heads, anchors, dim = 2, 4, 128, 64
    kv = AnchorKV(
        keys=torch.randn(layers, heads, anchors, dim, generator=g),
        values=torch.randn(layers, heads, anchors, dim, generator=g),
        positions=torch.arange(anchors, dtype=torch.long) * 4 + 2,
        num_tokens=anchors * 4,
        fingerprint=FINGERPRINT,
        content_hash=key_of(i).split("-")[1],
        rotary=Rotary(inv_freq=torch.rand(1, dim // 2, generator=g), layer_type=torch.zeros(layers, dtype=torch.long)),
    )
    return kv, {"text": f"passage {i % NUM_KEYS}", "i": i % NUM_KEYS}


def main() -> None:
    torch.set_num_threads(1)
    directory, first, stride = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    store = KVStore(max_bytes=0, directory=directory)  # disk only
    print("ready", flush=True)
    i = first
    while True:
        kv, meta = entry(i)
        store.put(key_of(i), kv, meta)
        i += stride


if __name__ == "__main__":
    main()
