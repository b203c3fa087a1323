#!/usr/bin/env bash
# session 30's candidate (README.md here): session 28's x5hn50s28 run (session 22's recipe from the shipped 5x
# adapter, bf16, gold last 0.75, hard negatives 0.5, seed 28, 374 steps: the same items) plus --distill 0.5 from
# full-ft's top-32 distributions stored by a teacher pass running beside it.
# Usage: train.sh teacher (the teacher pass) | train.sh x5kds30 | train.sh x15kds30 (the students; they wait for the
# teacher's shards; the 15x one, added at 10:00 UTC, reads the same stored logits: the stream does not depend on the ratio)
cd /work/main
S=/work/shared/data R=~/.cache/sac-rag/runs/s30
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1
stream="--max-distractors 4 --max-questions 6 --qa-data $S/squad/squad-v1.1-dev-part1.json@0.55
  --qa-data $S/nq_open/nq-open-oracle.jsonl.gz:nq:even@0.45 --seed 28 --gold-last 0.75 --hard-negatives 0.5"
case $1 in
  teacher) exec .venv/bin/sac-rag teacher-logits --teacher-adapter ~/.cache/sac-rag/runs/full-ft-qa/latest/adapter \
             --items 1496 --top-k 32 --shard-items 25 --dtype bfloat16 --threads 1 $stream --out $R/teacher-s28 ;;
  x5kds30) exec /work/main/docs/evals/selection/s22/train.sh x5kds30 --steps 374 --decay-steps 152 --time-budget 0 \
             --dtype bfloat16 --gold-last 0.75 --seed 28 --hard-negatives 0.5 --distill 0.5 \
             --teacher-logits $R/teacher-s28 --teacher-wait 3600 --out $R/x5kds30 ;;
  x15kds30) exec /work/main/docs/evals/selection/s22/train.sh x15kds30 --ratio 15 \
             --init-adapter sac_rag/adapters/gemma-3-270m-x15 --steps 374 --decay-steps 152 --time-budget 0 \
             --dtype bfloat16 --gold-last 0.75 --seed 28 --hard-negatives 0.5 --distill 0.5 \
             --teacher-logits $R/teacher-s28 --teacher-wait 3600 --out $R/x15kds30 ;;
esac
