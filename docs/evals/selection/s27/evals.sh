#!/usr/bin/env bash
# session 27: one adapter ($1 name, $2 path, $3 settings; $4 ratio, 5 by default), grounded, float32, one thread;
# session 24's script on session 27's slices: SQuAD part 2 questions 4100-4299, NQ-open odd items 900-1099
OUT=docs/evals/selection/s27 RUNS=~/.cache/sac-rag/runs/s27 RATIO=${4:-5} SQ_OFFSET=4100 NQ_OFFSET=900 \
  exec /work/main/docs/evals/selection/s24/evals.sh "$1" "$2" "$3"
