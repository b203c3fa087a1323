#!/usr/bin/env bash
# session 30: one adapter ($1 name, $2 path, $3 settings; $4 ratio, 5 by default), grounded, float32, one thread;
# session 24's script on session 30's slices: SQuAD part 2 questions 4500-4699 (fresh), NQ-open odd items 500-699
# (reused: no odd item is fresh; the least recently used slice, sessions 10-11's)
OUT=docs/evals/selection/s30 RUNS=~/.cache/sac-rag/runs/s30 RATIO=${4:-5} SQ_OFFSET=4500 NQ_OFFSET=500 \
  exec /work/main/docs/evals/selection/s24/evals.sh "$1" "$2" "$3"
