#!/usr/bin/env bash
# session 33's rule (README.md here): one 15x adapter ($1 name, $2 path; $3 settings, default all five), grounded,
# float32, one thread, at ratio 15:
# td/tdd TyDi QA GoldP English dev questions 0-199 (shuffled with seed 0; no 15x decision has used them),
# nw/nwd SQuADShifts new_wiki questions 600-799 (shuffled with seed 0; fresh), --reuse-kv (../s31/evals.sh);
# nq NQ-open odd items 900-1099, the guard (no 15x decision has used them; ../s24/evals.sh);
# td/nw/nq the gold passage alone, tdd/nwd among the 4 retrieved distractors in relevance order.
cd /work/main
O=docs/evals/selection/s33 R=~/.cache/sac-rag/runs/s33
mkdir -p $R
for K in ${3:-td nw nq tdd nwd}; do
  [ -f $O/$1_$K.json ] && continue
  case $K in
    td|tdd) RATIO=15 OFFSET=0 OUT=$O docs/evals/selection/s31/evals.sh $1 $2 $K ;;
    nw|nwd) RATIO=15 OFFSET=600 OUT=$O docs/evals/selection/s31/evals.sh $1 $2 $K ;;
    nq) RATIO=15 OUT=$O RUNS=$R SQ_OFFSET=0 NQ_OFFSET=900 docs/evals/selection/s24/evals.sh $1 $2 nq ;;
  esac
done
