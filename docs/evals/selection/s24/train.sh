#!/usr/bin/env bash
# session 24: session 22's control recipe + --gold-last (one thread, float32, this CPU)
cd /work/main
S=/work/shared/data; R=~/.cache/sac-rag/runs/s24
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1
N=$1; shift
.venv/bin/sac-rag train --stage qa --ratio 5 --device cpu --dtype float32 --steps 100000 --decay-steps 40000 \
  --time-budget 4200 --grad-accum 4 --lr 1e-4 --emb-lr 1e-3 --warmup 10 --threads 1 \
  --max-distractors 4 --max-questions 6 --qa-data "$S/squad/squad-v1.1-dev-part1.json@0.55" \
  --qa-data "$S/nq_open/nq-open-oracle.jsonl.gz:nq:even@0.45" --seed 22 --save-every 300 \
  --init-adapter sac_rag/adapters/gemma-3-270m-x5 --out $R/$N "$@"
