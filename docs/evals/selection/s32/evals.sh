#!/usr/bin/env bash
# session 32's rule (README.md here): one 5x adapter ($1 name, $2 path; $3 settings, default all six), grounded,
# float32, one thread, --reuse-kv on the held-out source:
# nw/nwd SQuADShifts new_wiki questions 400-599 (shuffled with seed 0; ../s31/evals.sh),
# sq/sqd SQuAD part 2 questions 5300-5399 (the last 100 fresh ones; ../s24/evals.sh with LIMIT=100),
# nq/nqd NQ-open odd items 900-1099 (reused: last used by session 27's rule; ../s24/evals.sh);
# nw/sq/nq the gold passage alone, nwd/sqd/nqd among the 4 retrieved distractors in relevance order.
cd /work/main
O=docs/evals/selection/s32 R=~/.cache/sac-rag/runs/s32
mkdir -p $R
for K in ${3:-nw sq nq nwd sqd nqd}; do
  [ -f $O/$1_$K.json ] && continue
  case $K in
    nw|nwd) OFFSET=400 OUT=$O docs/evals/selection/s31/evals.sh $1 $2 $K ;;
    sq|sqd) OUT=$O RUNS=$R LIMIT=100 SQ_OFFSET=5300 docs/evals/selection/s24/evals.sh $1 $2 $K ;;
    nq|nqd) OUT=$O RUNS=$R NQ_OFFSET=900 docs/evals/selection/s24/evals.sh $1 $2 $K ;;
  esac
done
