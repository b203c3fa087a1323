"""Session 21: grounded beam search (width 4) against greedy grounded decoding, on end_bias.py's questions.
Usage: beam.py METHOD DATA PASSAGES OUT.json (float32, one thread)."""
import json, sys, time, warnings
import torch
warnings.simplefilter("ignore")
from sac_rag import SACModel
from sac_rag.generation import SamplingParams, _prefill
from sac_rag.grounding import SpanIndex, _beam_decode, _output
from sac_rag.evaluation.qa import EvalConfig, select_examples, _segments
from sac_rag.evaluation.metrics import score

WIDTHS = (4,)
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
    rec = {"id": e.id, "answers": list(e.answers)}
    with torch.inference_mode():
        state = _prefill(ctx, segs)
        for w in WIDTHS:
            ids, finish = _beam_decode(ctx, state, index, params, 128, w)
            o = _output(ctx, state, index, params, ids, finish)
            rec[f"beam{w}"] = {"prediction": o.text.strip(), **score(o.text.strip(), e.answers)}
    records.append(rec)
    if n % 20 == 19:
        print(n + 1, f"{time.time() - t0:.0f}s", {f"beam{w}": round(100 * sum(r[f"beam{w}"]["f1"] for r in records) / len(records), 2) for w in WIDTHS}, flush=True)
summary = {f"beam{w}": {m: round(100 * sum(r[f"beam{w}"][m] for r in records) / len(records), 2) for m in ("em", "f1")} for w in WIDTHS}
print(summary)
json.dump({"method": method, "data": cfg.data, "passages": k, "summary": summary, "records": records}, open(out, "w"), indent=1, ensure_ascii=False)
