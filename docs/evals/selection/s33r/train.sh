#!/usr/bin/env bash
# session 33's second rule (README.md here): the 5x default (x5td31) trained 374 more steps of its own recipe with a
# fourth source in the mixture, SQuADShifts' reddit set (posts and comments, not Wikipedia; fetched into the cache,
# not committed; docs/TRAINING.md lists it). Resume: run it again (it continues from its latest checkpoint).
cd /work/main
F=${FETCHED:-~/.cache/sac-rag/data/fetched} S=/work/shared/data R=~/.cache/sac-rag/runs/s33
mkdir -p $R
export OMP_NUM_THREADS=${THREADS:-1} OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1
exec .venv/bin/sac-rag train --stage qa --ratio 5 --device cpu --dtype bfloat16 --steps 374 --decay-steps 152 --time-budget 0 \
  --grad-accum 4 --lr 1e-4 --emb-lr 1e-3 --warmup 10 --threads ${THREADS:-1} --max-distractors 4 --max-questions 6 \
  --qa-data "$S/squad/squad-v1.1-dev-part1.json@0.4" --qa-data "$S/nq_open/nq-open-oracle.jsonl.gz:nq:even@0.2" \
  --qa-data "$F/english_tydiqa_train.json@0.2" --qa-data "$F/reddit_v1.0.json@0.2" --gold-last 0.75 --seed 35 \
  --save-every 300 --init-adapter sac_rag/adapters/gemma-3-270m-x5 --out $R/x5rd33 "$@"
