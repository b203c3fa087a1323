"""Session 20: the cost of grounded decoding, in one process, alternating free and grounded on the same prompts
(SAC 5x, float32, one thread; SQuAD part 2 questions 2900-2959 with the gold passage, or among 4 distractors)."""
import statistics, sys, time, warnings
import torch
warnings.simplefilter("ignore")
from sac_rag import SACModel
from sac_rag.evaluation.qa import EvalConfig, select_examples, QA_TEMPLATE
torch.set_num_threads(1)
sac = SACModel.from_pretrained(dtype="float32", device="cpu")
for k in (1, 5):
    items = select_examples(EvalConfig(data="/work/shared/data/squad/squad-v1.1-dev-part2.json", passages=k, offset=2900, limit=60))
    free, grounded, ft, gt = [], [], [], []
    for e, passages in items:
        segs = [*sac.compress_batch(passages), QA_TEMPLATE.format(question=e.question.strip())]
        for mode in ("free", "grounded"):
            t = time.perf_counter()
            out = sac.generate(segs, max_new_tokens=24, stop=["\n"], ground=passages if mode == "grounded" else None)
            dt = time.perf_counter() - t
            (free if mode == "free" else grounded).append(dt)
            (ft if mode == "free" else gt).append(dt / max(1, len(out.token_ids)))
    print(f"k={k}: median per answer free {statistics.median(free)*1000:.0f} ms, grounded {statistics.median(grounded)*1000:.0f} ms "
          f"(ratio {statistics.median(grounded)/statistics.median(free):.2f}); per generated token free {statistics.median(ft)*1000:.0f} ms, grounded {statistics.median(gt)*1000:.0f} ms")
