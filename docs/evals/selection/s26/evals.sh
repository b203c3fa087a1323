#!/usr/bin/env bash
# session 26's rule: one 15x adapter ($1 name, $2 path), grounded, float32, one thread; settings ($3, default all six),
# session 24's script on session 26's slices: SQuAD part 2 questions 3900-4099, NQ-open odd items 700-899
OUT=docs/evals/selection/s26 RUNS=~/.cache/sac-rag/runs/s26 RATIO=15 SQ_OFFSET=3900 NQ_OFFSET=700 \
  exec /work/main/docs/evals/selection/s24/evals.sh "$@"
