"""Session 29: how much of full-ft's probability mass its top-k logits hold at the answer positions of training items
(design input for distillation from stored logits, docs/adapters.md "What we would try next"). 20 items of session
22's mixture (seed 29), the full-ft adapter in ~/.cache/sac-rag/runs/full-ft-qa, bf16, 2 threads. Run:
.venv/bin/python docs/evals/selection/s29/teacher_topk.py"""
import os, time
import torch
from sac_rag.training.trainer import TrainConfig, item_stream, _load_teacher, _target_ids, _teacher_rows
S = "/work/shared/data"
cfg = TrainConfig(stage="qa", ratio=5, dtype="bfloat16", seed=29, max_distractors=4, max_questions=6,
                  qa_data=(f"{S}/squad/squad-v1.1-dev-part1.json@0.55", f"{S}/nq_open/nq-open-oracle.jsonl.gz:nq:even@0.45"),
                  distill=0.5, teacher_adapter=os.path.expanduser("~/.cache/sac-rag/runs/full-ft-qa/latest/adapter"), out_dir="/tmp/s29/out")
teacher = _load_teacher(cfg)
torch.set_num_threads(2)
ks = (8, 32, 128, 512); cover = {k: [] for k in ks}; positions = 0; dt = 0.0
for i, item in zip(range(20), item_stream(cfg)):
    targets = [_target_ids(teacher, text, cfg, item.kind) for _, text in item.queries]
    t0 = time.perf_counter()  # the teacher pass alone (not the data loading of the first item)
    rows = _teacher_rows(teacher, item, targets, [len(t) + 1 for t in targets], cfg, lora=True)
    dt += time.perf_counter() - t0
    for r in rows:
        p = torch.softmax(r[:-1].float(), -1)
        positions += p.shape[0]
        top = p.sort(-1, descending=True).values
        for k in ks:
            cover[k] += top[:, :k].sum(-1).tolist()
print(f"items 20, answer positions {positions}, vocab {rows[0].shape[-1]}, teacher pass {dt / 20:.2f} s/item (2 threads)")
for k in ks:
    c = sorted(cover[k]); n = len(c)
    print(f"top-{k}: mean mass {sum(c) / n:.4f}, 10th percentile {c[n // 10]:.4f}, min {c[0]:.4f}; "
          f"bytes/item at bf16 values + int32 ids: {positions / 20 * k * 6:.0f}")
