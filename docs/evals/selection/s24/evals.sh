#!/usr/bin/env bash
# session 24's rule: one adapter ($1 name, $2 path), grounded, float32, one thread; settings ($3, default all six):
# sq/nq gold passage alone; sqo/nqo among 4 distractors in the integrations' order (--order relevance); sqr/nqr random order;
# sqd/nqd among the 4 passages MiniLM ranks nearest the question that hold no answer, in relevance order (session 27)
# (session 26 runs it with OUT, RUNS, RATIO, SQ_OFFSET and NQ_OFFSET set: ../s26/evals.sh; the defaults are session 24's)
# (session 32 sets LIMIT=100 for its SQuAD slice, the last 100 fresh questions: ../s32/evals.sh)
cd /work/main
S=/work/shared/data; O=${OUT:-docs/evals/selection/s24}; R=${RUNS:-~/.cache/sac-rag/runs/s24}
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
N=$1; A=$2
E=".venv/bin/sac-rag eval --method sac --ratio ${RATIO:-5} --dtype float32 --device cpu --grounded --limit ${LIMIT:-200} --adapter $A"
SQ="--data $S/squad/squad-v1.1-dev-part2.json --offset ${SQ_OFFSET:-3700}"
NQ="--data $S/nq_open/nq-open-oracle.jsonl.gz --format nq --parity odd --offset ${NQ_OFFSET:-500}"
for K in ${3:-sq nq sqo nqo sqr nqr}; do
  case $K in
    sq) $E $SQ --json $O/${N}_sq.json ;;
    nq) $E $NQ --json $O/${N}_nq.json ;;
    sqo) $E $SQ --passages 5 --order relevance --json $O/${N}_sqo.json ;;
    nqo) $E $NQ --passages 5 --order relevance --json $O/${N}_nqo.json ;;
    sqr) $E $SQ --passages 5 --json $O/${N}_sqr.json ;;
    nqr) $E $NQ --passages 5 --json $O/${N}_nqr.json ;;
    sqd) $E $SQ --passages 5 --distractors retrieved --order relevance --json $O/${N}_sqd.json ;;
    nqd) $E $NQ --passages 5 --distractors retrieved --order relevance --json $O/${N}_nqd.json ;;
  esac > $R/log_${N}_${K}.txt 2>&1
  echo "$(date +%T) done $N $K rc=$?" >> $R/progress.txt
done
