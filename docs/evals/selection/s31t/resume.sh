#!/usr/bin/env bash
# next session: resume x5td31 (from its latest checkpoint), then run this rule's evals (README.md here) that have no
# file yet: the 5x default's on one core beside the training, the candidate's when it has finished; then the bar.
# Needs the two fetched files in ~/.cache/sac-rag/data/fetched/ (../s31/README.md says where from).
cd /work/main
S=/work/shared/data R=~/.cache/sac-rag/runs/s31 O=docs/evals/selection/s31t
run() {  # $1 name, $2 adapter: the four held-out settings at offset 200, then the NQ-open guard
  for K in td nw tdd nwd; do
    [ -f $O/$1_$K.json ] || OFFSET=200 OUT=$O docs/evals/selection/s31/evals.sh $1 $2 $K
  done
  [ -f $O/$1_nq.json ] || OUT=$O RUNS=$R SQ_OFFSET=0 NQ_OFFSET=700 docs/evals/selection/s24/evals.sh $1 $2 nq
}
(
  docs/evals/selection/s31t/train.sh >> $R/x5td31.log 2>&1
  echo "$(date +%T) x5td31 ended: $(tail -n 1 $R/x5td31/log.jsonl | cut -c1-100)" >> $R/progress.txt
  rm -rf $R/cand5td && cp -r $R/x5td31/latest/adapter $R/cand5td
  run x5td31 $R/cand5td
  export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
  for D in float32 bfloat16; do
    .venv/bin/sac-rag eval --data $S/squad/squad-v1.1-dev-part2.json --method sac --ratio 5 --limit 200 --dtype $D \
      --device cpu --adapter $R/cand5td --json $O/bar_x5td31_$D.json > $R/bar_$D.log 2>&1
    echo "$(date +%T) done bar $D rc=$?" >> $R/progress.txt
  done
) > /dev/null 2>&1 &
run shipped5 sac_rag/adapters/gemma-3-270m-x5
