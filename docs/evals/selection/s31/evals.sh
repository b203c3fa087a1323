#!/usr/bin/env bash
# session 31: one 5x adapter ($1 name, $2 path; $3 settings, default all four) on two held-out sources that no
# adapter has seen, fetched from GitHub into the cache (not committed; README.md here says where from):
# td/tdd TyDi QA GoldP English dev, nw/nwd SQuADShifts new_wiki; shuffled with seed 0, first 200 questions;
# td/nw the gold passage alone, tdd/nwd among the 4 passages of the same file MiniLM ranks nearest the question
# that hold no answer, in relevance order. Grounded, float32, one thread, --reuse-kv on every run of this rule.
cd /work/main
F=${FETCHED:-~/.cache/sac-rag/data/fetched} O=${OUT:-docs/evals/selection/s31} R=~/.cache/sac-rag/runs/s31
mkdir -p $R
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
# METHOD=full-ft runs the rival (an adapter that reads the full text) on the same slices; --reuse-kv is SAC's only
M=${METHOD:-sac}; [ "$M" = sac ] && KV=--reuse-kv || KV=
E=".venv/bin/sac-rag eval --method $M --ratio ${RATIO:-5} --dtype float32 --device cpu --grounded $KV --limit 200 --adapter $2"
TD="--data $F/english_tydiqa_dev.json --format squad --offset ${OFFSET:-0}"  # ../s31t runs OFFSET=200 OUT=docs/evals/selection/s31t
NW="--data $F/new_wiki_v1.0.json --format squad --offset ${OFFSET:-0}"
RD="--passages 5 --distractors retrieved --order relevance"
for K in ${3:-td nw tdd nwd}; do
  case $K in
    td) $E $TD --json $O/$1_td.json ;;
    nw) $E $NW --json $O/$1_nw.json ;;
    tdd) $E $TD $RD --json $O/$1_tdd.json ;;
    nwd) $E $NW $RD --json $O/$1_nwd.json ;;
  esac > $R/log_$(basename $O)_$1_$K.txt 2>&1
  echo "$(date +%T) done $1 $K rc=$?" >> $R/progress.txt
done
python3 docs/evals/selection/s31/strip.py $O  # the committed records keep ids, predictions and scores, not the sources' questions and answers
