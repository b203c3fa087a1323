"""Session 30: the distilled run's cross-entropy on the answers against the control's, step by step on the same
items (both runs draw the same stream: seed 28, the same data and options). A step's value is the mean over its 4
items. Steps 1-10 are the warmup; the control's log holds some steps twice (logged before a stop and again after
its resume): the last record of a step is used. Run: python3 docs/evals/selection/s30/per_item.py [LOG]"""
import json, math, os, sys

log = sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser("~/.cache/sac-rag/runs/s30/x5kds30/log.jsonl")


def by_step(path, key):
    out = {}
    for line in open(path):
        r = json.loads(line)
        out[r["step"]] = r[key]
    return out


kd, ctl = by_step(log, "ce"), by_step("docs/logs/qa-x5-s28-hn50.jsonl", "loss")
kl = by_step(log, "kl")
for lo, hi in ((11, 50), (51, 100), (101, 200), (201, 374)):
    steps = [s for s in range(lo, hi + 1) if s in kd and s in ctl]
    if len(steps) < 2:
        continue
    d = [kd[s] - ctl[s] for s in steps]
    m = sum(d) / len(d)
    se = math.sqrt(sum((x - m) ** 2 for x in d) / (len(d) - 1) / len(d))
    print(f"steps {lo}-{max(steps)} ({len(steps)}): CE distilled {sum(kd[s] for s in steps) / len(steps):.3f}, control "
          f"{sum(ctl[s] for s in steps) / len(steps):.3f}, paired {m:+.3f} [{se:.3f}] nats; KL to the teacher "
          f"{sum(kl[s] for s in steps) / len(steps):.3f}")
