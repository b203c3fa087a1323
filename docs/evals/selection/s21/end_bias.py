"""Session 21: grounded decoding's end_bias, chosen on questions the tables do not use.

For each question the prompt is prefilled once and every end_bias is decoded from a copy of that state, so the
variants differ only in decoding. Usage: end_bias.py METHOD(sac|full-ft) DATA(sq|nq) PASSAGES OUT.json
(float32, one thread; SQuAD part 2 questions 3100-3299 of the shuffle, NQ-open odd items 700-899)."""
import copy, json, sys, time, warnings
import torch
warnings.simplefilter("ignore")
from sac_rag import SACModel
from sac_rag.generation import SamplingParams, _prefill
from sac_rag.grounding import SpanIndex, _decode, _output
from sac_rag.evaluation.qa import EvalConfig, select_examples, _segments
from sac_rag.evaluation.metrics import score

BIASES = (0.0, -1.0, -2.0, -4.0)
method, data, k, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
torch.set_num_threads(1)
S = "/work/shared/data"
FT = "/root/.cache/sac-rag/runs/full-ft-qa/latest/adapter"
if data == "sq":
    cfg = EvalConfig(data=f"{S}/squad/squad-v1.1-dev-part2.json", passages=k, offset=3100, limit=200)
else:
    cfg = EvalConfig(data=f"{S}/nq_open/nq-open-oracle.jsonl.gz", fmt="nq", parity="odd", passages=k, offset=700, limit=200)
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
        for b in BIASES:
            st = copy.deepcopy(state)
            ids, finish = _decode(ctx, st, index, params, 128, b)
            o = _output(ctx, st, index, params, ids, finish)
            rec[str(b)] = {"prediction": o.text.strip(), **score(o.text.strip(), e.answers)}
    records.append(rec)
    if n % 20 == 19:
        print(n + 1, f"{time.time() - t0:.0f}s", {str(b): round(100 * sum(r[str(b)]["f1"] for r in records) / len(records), 2) for b in BIASES}, flush=True)
summary = {str(b): {m: round(100 * sum(r[str(b)][m] for r in records) / len(records), 2) for m in ("em", "f1")} for b in BIASES}
print(summary)
json.dump({"method": method, "data": cfg.data, "passages": k, "offset": cfg.offset, "limit": cfg.limit,
           "biases": BIASES, "summary": summary, "records": records}, open(out, "w"), indent=1, ensure_ascii=False)
