"""Session 21: ground the answer in one passage, the one whose span starts get the most first-token probability,
against greedy grounding over all passages (end_bias.py's "0.0" rows, the same questions).
Usage: passage.py METHOD DATA PASSAGES OUT.json (float32, one thread)."""
import json, sys, time, warnings
import torch
warnings.simplefilter("ignore")
from sac_rag.grounding import _decode, _output, _passage_by_mass
from sac_rag.evaluation.metrics import score

from common import questions

method, data, k, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
records = []
t0 = time.time()
for n, e, passages, ctx, state, index, params in questions(sys.argv):
    rec = {"id": e.id, "answers": list(e.answers), "gold": passages.index(e.passages[0])}
    with torch.inference_mode():
        index.only = {_passage_by_mass(ctx, state, index, 128)}
        ids, finish = _decode(ctx, state, index, params, 128, 0.0)
        o = _output(ctx, state, index, params, ids, finish)
    rec["mass"] = {"prediction": o.text.strip(), "passage": min(index.only), **score(o.text.strip(), e.answers)}
    records.append(rec)
    if n % 20 == 19:
        print(n + 1, f"{time.time() - t0:.0f}s", round(100 * sum(r["mass"]["f1"] for r in records) / len(records), 2),
              "picked gold", sum(r["mass"]["passage"] == r["gold"] for r in records), flush=True)
summary = {"mass": {m: round(100 * sum(r["mass"][m] for r in records) / len(records), 2) for m in ("em", "f1")},
           "picked_gold": sum(r["mass"]["passage"] == r["gold"] for r in records)}
print(summary)
json.dump({"method": method, "data": sys.argv[2], "passages": k, "summary": summary, "records": records}, open(out, "w"), indent=1, ensure_ascii=False)
