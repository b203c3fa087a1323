#!/usr/bin/env bash
# next session: resume session 30's teacher pass and students (both go on from their last shard / checkpoint), then
# score the student by docs/evals/selection/s30/README.md; evals of the control that did not finish are rerun
cd /work/main
R=~/.cache/sac-rag/runs/s30 S=/work/shared/data
nohup docs/evals/selection/s30/train.sh teacher >> $R/teacher3.log 2>&1 &
(
  docs/evals/selection/s30/train.sh x5kds30 >> $R/student.log 2>&1
  echo "$(date +%T) student ended: $(tail -n 1 $R/x5kds30/log.jsonl | cut -c1-100)" >> $R/progress.txt
  rm -rf $R/cand5kd && cp -r $R/x5kds30/latest/adapter $R/cand5kd
  docs/evals/selection/s30/evals.sh x5kds30 $R/cand5kd "sq nq sqd nqd"
  export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
  for D in float32 bfloat16; do
    .venv/bin/sac-rag eval --data $S/squad/squad-v1.1-dev-part2.json --method sac --ratio 5 --limit 200 --dtype $D \
      --device cpu --adapter $R/cand5kd --json docs/evals/selection/s30/bar_x5kds30_$D.json > $R/bar_$D.log 2>&1
    echo "$(date +%T) done bar $D rc=$?" >> $R/progress.txt
  done
) > /dev/null 2>&1 &
for K in sq nq sqd nqd; do  # the control's settings that have no file yet (one core beside the student)
  [ -f docs/evals/selection/s30/x5hn50s28_$K.json ] || docs/evals/selection/s30/evals.sh x5hn50s28 ~/.cache/sac-rag/runs/s28/cand5 "$K"
done
# then the 15x student (resumed), the shipped 15x adapter on the slices, and the 15x candidate
(
  docs/evals/selection/s30/train.sh x15kds30 >> $R/student15.log 2>&1
  echo "$(date +%T) x15kds30 ended: $(tail -n 1 $R/x15kds30/log.jsonl | cut -c1-100)" >> $R/progress.txt
  rm -rf $R/cand15kd && cp -r $R/x15kds30/latest/adapter $R/cand15kd
  docs/evals/selection/s30/evals.sh x15kds30 $R/cand15kd "sq nq sqd nqd" 15
) > /dev/null 2>&1 &
docs/evals/selection/s30/evals.sh shipped15 sac_rag/adapters/gemma-3-270m-x15 "sq nq sqd nqd" 15
