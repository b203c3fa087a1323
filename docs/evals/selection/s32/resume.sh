#!/usr/bin/env bash
# next session: resume x5lm4s32 (from its latest checkpoint) and run this rule's evals (README.md here) that have no
# file yet: the control's (x5td31) on one core beside the training, the candidate's when it has finished; then the
# bar. Needs ~/.cache/sac-rag/data/fetched/ (../s31/README.md).
cd /work/main
S=/work/shared/data R=~/.cache/sac-rag/runs/s32 O=docs/evals/selection/s32
mkdir -p $R
(
  docs/evals/selection/s32/train.sh >> $R/x5lm4s32.log 2>&1
  echo "$(date +%T) x5lm4s32 ended: $(tail -n 1 $R/x5lm4s32/log.jsonl | cut -c1-100)" >> $R/progress.txt
  rm -rf $R/cand5lm4 && cp -r $R/x5lm4s32/latest/adapter $R/cand5lm4
  docs/evals/selection/s32/evals.sh x5lm4s32 $R/cand5lm4
  export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
  for D in float32 bfloat16; do
    [ -f $O/bar_x5lm4s32_$D.json ] && continue
    .venv/bin/sac-rag eval --data $S/squad/squad-v1.1-dev-part2.json --method sac --ratio 5 --limit 200 --dtype $D \
      --device cpu --adapter $R/cand5lm4 --json $O/bar_x5lm4s32_$D.json > $R/bar_$D.log 2>&1
    echo "$(date +%T) done bar $D rc=$?" >> $R/progress.txt
  done
) > /dev/null 2>&1 &
# the control (x5td31, committed as a candidate in session 32 and the default once it ships); the old default's runs
# (shipped5) are needed only while x5td31 has not shipped: `evals.sh shipped5 sac_rag/adapters/gemma-3-270m-x5`
docs/evals/selection/s32/evals.sh x5td31 sac_rag/adapters/gemma-3-270m-x5   # the default since session 33 (session 32 committed it in docs/candidates/, since removed: the same weights)
