#!/usr/bin/env bash
# session 22's rule: one adapter ($1 name, $2 path), grounded, float32, one thread; among distractors first
cd /work/main
S=/work/shared/data; O=docs/evals/selection/s22; R=~/.cache/sac-rag/runs/s22
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
N=$1; A=$2
E=".venv/bin/sac-rag eval --method sac --ratio 5 --dtype float32 --device cpu --grounded --limit 200 --adapter $A"
SQ="--data $S/squad/squad-v1.1-dev-part2.json --offset 3300"
NQ="--data $S/nq_open/nq-open-oracle.jsonl.gz --format nq --parity odd --offset 900"
for K in sqr nqr sq nq; do
  case $K in
    sqr) $E $SQ --passages 5 --json $O/${N}_sqr.json ;;
    nqr) $E $NQ --passages 5 --json $O/${N}_nqr.json ;;
    sq) $E $SQ --json $O/${N}_sq.json ;;
    nq) $E $NQ --json $O/${N}_nq.json ;;
  esac > $R/log_${N}_${K}.txt 2>&1
  echo "$(date +%T) done $N $K rc=$?" >> $R/progress.txt
done
