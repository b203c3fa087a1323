#!/usr/bin/env bash
# session 35's rule (README.md here): the 5x default (x5td31) trained for 3,600 s more of its own recipe (session
# 31's mixture), one thread, with a quarter of the items LM-continuation items (`--lm-mix 0.25`, candidate `x5lm35`)
# or without (`--lm-mix 0`, control `x5c35`), both runs side by side on the same seed (the same QA items, in order).
# Usage: train.sh NAME LM_MIX. Resume: run it again (it continues from its latest checkpoint and what is left of
# its time budget).
cd /work/main
NAME=$1 MIX=$2
F=${FETCHED:-~/.cache/sac-rag/data/fetched} S=/work/shared/data R=~/.cache/sac-rag/runs/s35
mkdir -p $R
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1
exec .venv/bin/sac-rag train --stage qa --ratio 5 --device cpu --dtype bfloat16 --steps 1000 --decay-steps 400 \
  --time-budget 3600 --grad-accum 4 --lr 1e-4 --emb-lr 1e-3 --warmup 10 --threads 1 --max-distractors 4 --max-questions 6 \
  --qa-data "$S/squad/squad-v1.1-dev-part1.json@0.5" --qa-data "$S/nq_open/nq-open-oracle.jsonl.gz:nq:even@0.25" \
  --qa-data "$F/english_tydiqa_train.json@0.25" --gold-last 0.75 --lm-mix $MIX --seed 36 \
  --save-every 300 --init-adapter sac_rag/adapters/gemma-3-270m-x5 --out $R/$NAME
