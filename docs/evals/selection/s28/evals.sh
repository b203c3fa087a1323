#!/usr/bin/env bash
# session 28: one adapter ($1 name, $2 path, $3 settings; $4 ratio, 5 by default), grounded, float32, one thread;
# session 24's script on session 28's slices: SQuAD part 2 questions 4300-4499, NQ-open odd items 1100-1299
OUT=docs/evals/selection/s28 RUNS=~/.cache/sac-rag/runs/s28 RATIO=${4:-5} SQ_OFFSET=4300 NQ_OFFSET=1100 \
  exec /work/main/docs/evals/selection/s24/evals.sh "$1" "$2" "$3"
