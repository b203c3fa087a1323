#!/usr/bin/env bash
# session 34, after s33r's rule was scored: the target on amazon reviews. `full-ft` (session 12's command in
# docs/TRAINING.md, rebuilt in session 34: ~/.cache/sac-rag/runs/full-ft-qa) on the rule's amazon slices, the same
# flags as evals.sh but for the method (no --reuse-kv: SAC's only). $1 settings (default: am amd).
cd /work/main
F=${FETCHED:-~/.cache/sac-rag/data/fetched} O=docs/evals/selection/s33r R=~/.cache/sac-rag/runs/s33
A=${ADAPTER:-~/.cache/sac-rag/runs/full-ft-qa/latest/adapter}
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
E=".venv/bin/sac-rag eval --method full-ft --ratio 5 --dtype float32 --device cpu --grounded --limit 200 --adapter $A"
AM="--data $F/amazon_reviews_v1.0.json --format squad --offset 0"
RD="--passages 5 --distractors retrieved --order relevance"
for K in ${1:-am amd}; do
  [ -f $O/fullft_$K.json ] && continue
  case $K in
    am) $E $AM --json $O/fullft_am.json ;;
    amd) $E $AM $RD --json $O/fullft_amd.json ;;
  esac > $R/log_s33r_fullft_$K.txt 2>&1
  echo "$(date +%T) done fullft $K rc=$?" >> $R/progress.txt
done
python3 docs/evals/selection/s31/strip.py $O
