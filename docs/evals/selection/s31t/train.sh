#!/usr/bin/env bash
# session 31's second rule (README.md here): the 5x default trained 374 more steps of session 27's bf16 recipe with a
# third, fresh source in the mixture: TyDi QA GoldP's English train set (3,696 questions, fetched into the cache,
# not committed; docs/TRAINING.md lists it). Resume: run it again (it continues from its latest checkpoint).
cd /work/main
F=${FETCHED:-~/.cache/sac-rag/data/fetched} S=/work/shared/data R=~/.cache/sac-rag/runs/s31
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1
exec .venv/bin/sac-rag train --stage qa --ratio 5 --device cpu --dtype bfloat16 --steps 374 --decay-steps 152 --time-budget 0 \
  --grad-accum 4 --lr 1e-4 --emb-lr 1e-3 --warmup 10 --threads 1 --max-distractors 4 --max-questions 6 \
  --qa-data "$S/squad/squad-v1.1-dev-part1.json@0.5" --qa-data "$S/nq_open/nq-open-oracle.jsonl.gz:nq:even@0.25" \
  --qa-data "$F/english_tydiqa_train.json@0.25" --gold-last 0.75 --seed 31 --save-every 300 \
  --init-adapter sac_rag/adapters/gemma-3-270m-x5 --out $R/x5td31 "$@"
