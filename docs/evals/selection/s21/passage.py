"""Session 21: ground the answer in one passage, the one whose span starts get the most first-token probability,
against greedy grounding over all passages (end_bias.py's "0.0" rows, the same questions).
Usage: passage.py METHOD DATA PASSAGES OUT.json (float32, one thread)."""
import json, sys, time, warnings
import torch
warnings.simplefilter("ignore")
from sac_rag import SACModel
from sac_rag.generation import SamplingParams, _prefill
from sac_rag.grounding import SpanIndex, _decode, _output, _passage_by_mass
from sac_rag.evaluation.qa import EvalConfig, select_examples, _segments
from sac_rag.evaluation.metrics import score

method, data, k, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
limit = int(sys.argv[5]) if len(sys.argv) > 5 else 200
torch.set_num_threads(1)
S = "/work/shared/data"
FT = "/root/.cache/sac-rag/runs/full-ft-qa/latest/adapter"
if data == "sq":
    cfg = EvalConfig(data=f"{S}/squad/squad-v1.1-dev-part2.json", passages=k, offset=3100, limit=limit)
else:
    cfg = EvalConfig(data=f"{S}/nq_open/nq-open-oracle.jsonl.gz", fmt="nq", parity="odd", passages=k, offset=700, limit=limit)
sac = SACModel.from_pretrained(adapter=FT if method == "full-ft" else "auto", ratio=5, dtype="float32", device="cpu")
params = SamplingParams(24, stop=("\n",))
records = []
t0 = time.time()
for n, (e, passages) in enumerate(select_examples(cfg)):
    segs, _ = _segments(sac, "full" if method == "full-ft" else "sac", e.question, passages, [], 5)
    ctx = sac._context()
    if method == "full-ft":
        ctx.decoder_mode = sac.encoder_mode
    index = SpanIndex(passages)
    rec = {"id": e.id, "answers": list(e.answers), "gold": passages.index(e.passages[0])}
    with torch.inference_mode():
        state = _prefill(ctx, segs)
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
json.dump({"method": method, "data": cfg.data, "passages": k, "summary": summary, "records": records}, open(out, "w"), indent=1, ensure_ascii=False)
