#!/usr/bin/env bash
# session 35's rule (README.md here): one 5x adapter ($1 name, $2 path; $3 settings, default all five), grounded,
# float32, one thread, --reuse-kv, 200 questions a setting (each source shuffled with seed 0):
#   nw / nwd  SQuADShifts new_wiki questions 1000-1199 (fresh), gold alone / among retrieved distractors
#   am / amd  SQuADShifts amazon questions 200-399 (fresh; a domain no adapter trains on), the same two settings
#   nq        the guard: NQ-open odd items 500-699, gold alone (reused: the least recently used slice, session 30)
# "among retrieved distractors": the 4 passages of the same file that MiniLM ranks nearest the question and that
# hold no answer, in relevance order (the integrations' order: the best-ranked passage last).
cd /work/main
F=${FETCHED:-~/.cache/sac-rag/data/fetched} S=/work/shared/data O=docs/evals/selection/s35 R=~/.cache/sac-rag/runs/s35
mkdir -p $R
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
E=".venv/bin/sac-rag eval --method sac --ratio 5 --dtype float32 --device cpu --grounded --reuse-kv --limit 200 --adapter $2"
declare -A SRC=(
  [nw]="--data $F/new_wiki_v1.0.json --format squad --offset 1000"
  [am]="--data $F/amazon_reviews_v1.0.json --format squad --offset 200"
  [nq]="--data $S/nq_open/nq-open-oracle.jsonl.gz --format nq --parity odd --offset 500")
RD="--passages 5 --distractors retrieved --order relevance"
for K in ${3:-nw am nq nwd amd}; do
  [ -f $O/$1_$K.json ] && continue
  case $K in *d) ARGS="${SRC[${K%d}]} $RD" ;; *) ARGS="${SRC[$K]}" ;; esac
  $E $ARGS --json $O/$1_$K.json > $R/log_$1_$K.txt 2>&1
  echo "$(date +%T) done $1 $K rc=$?" >> $R/progress.txt
done
python3 docs/evals/selection/s31/strip.py $O  # keep ids, predictions and scores, not the fetched sources' text
