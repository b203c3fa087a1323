#!/usr/bin/env bash
# Session 34: not needed any more. Both runs were trained again (the cache was lost) and scored; see README.md here
# and ../s33r/README.md ("Results"). Kept as the record of what session 33 left to do.
# next session: resume session 33's two runs (each from its latest checkpoint; a no-op once finished) and run their
# rules' evals that have no file yet, one chain a core: the 15x rule (README.md here) and the 5x one (../s33r).
# Each chain finishes its run, then runs the shipped adapter's evals, then the candidate's (and, for the 5x
# candidate, the bar). Needs ~/.cache/sac-rag/data/fetched/ (../s31 and ../s33r say where from).
cd /work/main
S=/work/shared/data R=~/.cache/sac-rag/runs/s33
mkdir -p $R
(
  docs/evals/selection/s33/train.sh >> $R/x15td33.log 2>&1
  echo "$(date +%T) x15td33 ended: $(tail -n 1 $R/x15td33/log.jsonl | cut -c1-100)" >> $R/progress.txt
  docs/evals/selection/s33/evals.sh shipped15 sac_rag/adapters/gemma-3-270m-x15
  rm -rf $R/cand15td && cp -r $R/x15td33/latest/adapter $R/cand15td
  docs/evals/selection/s33/evals.sh x15td33 $R/cand15td
) > /dev/null 2>&1 &
(
  docs/evals/selection/s33r/train.sh >> $R/x5rd33.log 2>&1
  echo "$(date +%T) x5rd33 ended: $(tail -n 1 $R/x5rd33/log.jsonl | cut -c1-100)" >> $R/progress.txt
  docs/evals/selection/s33r/evals.sh shipped5 sac_rag/adapters/gemma-3-270m-x5
  rm -rf $R/cand5rd && cp -r $R/x5rd33/latest/adapter $R/cand5rd
  docs/evals/selection/s33r/evals.sh x5rd33 $R/cand5rd
  export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
  for D in float32 bfloat16; do
    O=docs/evals/selection/s33r; [ -f $O/bar_x5rd33_$D.json ] && continue
    .venv/bin/sac-rag eval --data $S/squad/squad-v1.1-dev-part2.json --method sac --ratio 5 --limit 200 --dtype $D \
      --device cpu --adapter $R/cand5rd --json $O/bar_x5rd33_$D.json > $R/bar_$D.log 2>&1
    echo "$(date +%T) done bar x5rd33 $D rc=$?" >> $R/progress.txt
  done
) > /dev/null 2>&1 &
