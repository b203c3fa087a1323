#!/usr/bin/env bash
# session 33's second rule (README.md here): one 5x adapter ($1 name, $2 path; $3 settings, default all five),
# grounded, float32, one thread, --reuse-kv:
# am/amd SQuADShifts amazon questions 0-199 (shuffled with seed 0; a domain no adapter trains on),
# nw/nwd SQuADShifts new_wiki questions 800-999 (shuffled with seed 0; fresh),
# nq NQ-open odd items 1100-1299, the guard (gold alone; the least recently used slice, last used in session 13);
# am/nw/nq the gold passage alone, amd/nwd among the 4 passages of the same file that MiniLM ranks nearest the
# question and that hold no answer, in relevance order.
cd /work/main
F=${FETCHED:-~/.cache/sac-rag/data/fetched} S=/work/shared/data O=docs/evals/selection/s33r R=~/.cache/sac-rag/runs/s33
mkdir -p $R
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
E=".venv/bin/sac-rag eval --method sac --ratio 5 --dtype float32 --device cpu --grounded --reuse-kv --limit 200 --adapter $2"
AM="--data $F/amazon_reviews_v1.0.json --format squad --offset 0"
NW="--data $F/new_wiki_v1.0.json --format squad --offset 800"
NQ="--data $S/nq_open/nq-open-oracle.jsonl.gz --format nq --parity odd --offset 1100"
RD="--passages 5 --distractors retrieved --order relevance"
for K in ${3:-am nw nq amd nwd}; do
  [ -f $O/$1_$K.json ] && continue
  case $K in
    am) $E $AM --json $O/$1_am.json ;;
    nw) $E $NW --json $O/$1_nw.json ;;
    nq) $E $NQ --json $O/$1_nq.json ;;
    amd) $E $AM $RD --json $O/$1_amd.json ;;
    nwd) $E $NW $RD --json $O/$1_nwd.json ;;
  esac > $R/log_s33r_$1_$K.txt 2>&1
  echo "$(date +%T) done $1 $K rc=$?" >> $R/progress.txt
done
python3 docs/evals/selection/s31/strip.py $O  # keep ids, predictions and scores, not the fetched sources' text
