#!/usr/bin/env bash
# session 33's rule (README.md here): the shipped 15x adapter trained 374 more steps of x5td31's recipe and mixture
# (../s31t/train.sh: session 27's bf16 recipe on SQuAD part 1 at 0.5, NQ-open even at 0.25, TyDi QA GoldP English
# train at 0.25), seed 33. Resume: run it again (it continues from its latest checkpoint). THREADS=2 when it has
# the machine to itself.
cd /work/main
F=${FETCHED:-~/.cache/sac-rag/data/fetched} S=/work/shared/data R=~/.cache/sac-rag/runs/s33
mkdir -p $R
export OMP_NUM_THREADS=${THREADS:-1} OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1
exec .venv/bin/sac-rag train --stage qa --ratio 15 --device cpu --dtype bfloat16 --steps 374 --decay-steps 152 --time-budget 0 \
  --grad-accum 4 --lr 1e-4 --emb-lr 1e-3 --warmup 10 --threads ${THREADS:-1} --max-distractors 4 --max-questions 6 \
  --qa-data "$S/squad/squad-v1.1-dev-part1.json@0.5" --qa-data "$S/nq_open/nq-open-oracle.jsonl.gz:nq:even@0.25" \
  --qa-data "$F/english_tydiqa_train.json@0.25" --gold-last 0.75 --seed 33 --save-every 300 \
  --init-adapter sac_rag/adapters/gemma-3-270m-x15 --out $R/x15td33 "$@"
