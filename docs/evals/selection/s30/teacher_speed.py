"""Session 30: the teacher pass with shared prompt text (distill.shared_prefix_rows) against the batched pass
(trainer._teacher_rows), item by item in turn on the same items (20 items of session 28's stream without hard
negatives, which only change the distractors; full-ft in ~/.cache/sac-rag/runs/full-ft-qa, bf16, 1 thread).
Reports the time of each and how far apart their top-32 log-probabilities are. Run:
.venv/bin/python docs/evals/selection/s30/teacher_speed.py"""
import os, statistics, time
import torch
from sac_rag.training.distill import shared_prefix_rows
from sac_rag.training.trainer import TrainConfig, item_stream, _load_teacher, _target_ids, _teacher_rows
S = "/work/shared/data"
torch.set_num_threads(1)
cfg = TrainConfig(stage="qa", ratio=5, dtype="bfloat16", seed=28, gold_last=0.75, max_distractors=4, max_questions=6,
                  qa_data=(f"{S}/squad/squad-v1.1-dev-part1.json@0.55", f"{S}/nq_open/nq-open-oracle.jsonl.gz:nq:even@0.45"),
                  distill=1.0, teacher_adapter=os.path.expanduser("~/.cache/sac-rag/runs/full-ft-qa/latest/adapter"),
                  out_dir="/tmp/s30/speed")
teacher = _load_teacher(cfg)
a_t, b_t, gaps, agree = [], [], [], []
for i, item in zip(range(20), item_stream(cfg)):
    targets = [_target_ids(teacher, text, cfg, item.kind) for _, text in item.queries]
    t0 = time.perf_counter()
    a = _teacher_rows(teacher, item, targets, [len(t) + 1 for t in targets], cfg, lora=True)
    t1 = time.perf_counter()
    b = shared_prefix_rows(teacher, item, targets, cfg)
    t2 = time.perf_counter()
    a_t.append(t1 - t0); b_t.append(t2 - t1)
    for x, y in zip(a, b):
        lx, ly = torch.log_softmax(x.float(), -1), torch.log_softmax(y.float(), -1)
        top = torch.topk(lx, 32, -1)
        gaps.append((ly.gather(-1, top.indices) - top.values).abs().max().item())
        agree.append((lx.argmax(-1) == ly.argmax(-1)).float().mean().item())
print(f"20 items: batched {sum(a_t):.1f} s (median {statistics.median(a_t):.2f} s/item), shared {sum(b_t):.1f} s "
      f"(median {statistics.median(b_t):.2f} s/item), ratio {sum(a_t) / sum(b_t):.2f}x; top-32 log-prob gap max "
      f"{max(gaps):.3f}, median {statistics.median(gaps):.3f}; argmax agreement {sum(agree) / len(agree):.4f}")
