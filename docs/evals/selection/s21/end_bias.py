"""Session 21: grounded decoding's end_bias, chosen on questions the tables do not use.

For each question the prompt is prefilled once and every end_bias is decoded from a copy of that state, so the
variants differ only in decoding. Usage: end_bias.py METHOD(sac|full-ft) DATA(sq|nq) PASSAGES OUT.json
(float32, one thread; SQuAD part 2 questions 3100-3299 of the shuffle, NQ-open odd items 700-899)."""
import copy, json, sys, time, warnings
import torch
warnings.simplefilter("ignore")
from sac_rag.grounding import _decode, _output
from sac_rag.evaluation.metrics import score

from common import questions

BIASES = (0.0, -1.0, -2.0, -4.0)
method, data, k, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
records = []
t0 = time.time()
for n, e, passages, ctx, state, index, params in questions(sys.argv):
    rec = {"id": e.id, "answers": list(e.answers)}
    with torch.inference_mode():
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
json.dump({"method": method, "data": sys.argv[2], "passages": k, "offset": (3100 if sys.argv[2] == 'sq' else 700), "limit": len(records),
           "biases": BIASES, "summary": summary, "records": records}, open(out, "w"), indent=1, ensure_ascii=False)
