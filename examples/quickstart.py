"""Compress two passages once, store their anchor KV on disk, and answer questions from them.

Run: .venv/bin/python examples/quickstart.py
Passages: SQuAD v1.1 dev (Rajpurkar et al., 2016), Wikipedia text, CC BY-SA 4.0.
"""

import json
import tempfile
import time
from importlib import resources
from pathlib import Path

from sac_rag import AnchorKV, SACModel

corpus = json.loads(resources.files("sac_rag").joinpath("data/demo_corpus.json").read_text())
passages = [p["text"] for p in corpus["passages"][:2]]

sac = SACModel.from_pretrained()  # embedded Gemma 3 270M; warns if no trained adapter ships
print(sac)

t = time.perf_counter()
kvs = sac.compress_batch(passages)  # each passage compressed on its own
print(f"compressed {sum(kv.num_tokens for kv in kvs)} tokens into {sum(kv.num_anchors for kv in kvs)} anchors "
      f"in {time.perf_counter() - t:.2f} s")

with tempfile.TemporaryDirectory() as tmp:
    paths = [kv.save(Path(tmp) / f"{i}.safetensors") for i, kv in enumerate(kvs)]
    stored = [AnchorKV.load(p, expected_fingerprint=sac.fingerprint) for p in paths]

for q in corpus["questions"][:4]:
    out = sac.generate(sac.qa_segments(q["question"], stored), max_new_tokens=16, stop=["\n"])
    print(f"{q['question'].strip()!r} -> {out.text.strip()!r} (gold: {q['answers'][0]!r}; usage {out.usage.to_dict()})")
    # grounded: the answer is a span of the passages' text (they are at hand in RAG), with where it lies
    ans = sac.generate(sac.qa_segments(q["question"], stored), max_new_tokens=16, stop=["\n"], ground=passages)
    where = f"passage {ans.span.passage}, characters {ans.span.start}-{ans.span.end}" if ans.span else "no span"
    print(f"   grounded -> {ans.text!r} ({where})")
