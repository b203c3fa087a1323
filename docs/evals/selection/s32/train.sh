#!/usr/bin/env bash
# session 32's rule (README.md here): x5td31's run (../s31t/train.sh: the same recipe, mixture, seed and so the same
# 1,496 items) with four learned [LM] vectors instead of one (--lm-tokens 4; the shipped [LM] vector fills all four
# at the start). x5td31 is its control. Resume: run it again (it continues from its latest checkpoint).
cd /work/main
F=${FETCHED:-~/.cache/sac-rag/data/fetched} S=/work/shared/data R=~/.cache/sac-rag/runs/s32
mkdir -p $R
export OMP_NUM_THREADS=${THREADS:-1} OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1
exec .venv/bin/sac-rag train --stage qa --ratio 5 --device cpu --dtype bfloat16 --steps 374 --decay-steps 152 --time-budget 0 \
  --grad-accum 4 --lr 1e-4 --emb-lr 1e-3 --warmup 10 --threads ${THREADS:-1} --max-distractors 4 --max-questions 6 \
  --qa-data "$S/squad/squad-v1.1-dev-part1.json@0.5" --qa-data "$S/nq_open/nq-open-oracle.jsonl.gz:nq:even@0.25" \
  --qa-data "$F/english_tydiqa_train.json@0.25" --gold-last 0.75 --seed 31 --save-every 300 --lm-tokens 4 \
  --init-adapter sac_rag/adapters/gemma-3-270m-x5 --out $R/x5lm4s32 "$@"
