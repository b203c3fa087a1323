#!/usr/bin/env bash
# The 5x results tables' evals, rerun with x5td31 (session 31's candidate, which met its rule in session 32;
# docs/candidates/gemma-3-270m-x5-s31t) before it ships: the same commands as the files they replace in docs/evals/
# (`sac-rag report` prints each one; float32, one thread), with --adapter pointing at the candidate. Once the
# adapter is copied into the package, its fingerprint makes these the package's results. Run one or more workers
# (`rerun.sh`, twice for two cores): each takes the next file that has neither a result nor a worker on it.
cd /work/main
S=/work/shared/data O=docs/evals/pending-x5-s31t R=~/.cache/sac-rag/runs/s32/tables A=docs/candidates/gemma-3-270m-x5-s31t
mkdir -p $R $O/ordering
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
SQ="--data $S/squad/squad-v1.1-dev-part2.json" NQ="--data $S/nq_open/nq-open-oracle.jsonl.gz --format nq --parity odd"
jobs=(  # file :: data and options, the table's most quoted first
  "squad500_sac5_grounded.json::$SQ --limit 500 --grounded"
  "nq500_sac5_grounded.json::$NQ --limit 500 --grounded"
  "ordering/squad500_rag5_sac5td31_grounded_relevance.json::$SQ --passages 5 --limit 500 --order relevance --grounded --reuse-kv"
  "ordering/nq500_rag5_sac5td31_grounded_relevance.json::$NQ --passages 5 --limit 500 --order relevance --grounded --reuse-kv"
  "squad500_rag5_sac5_grounded.json::$SQ --passages 5 --limit 500 --grounded --reuse-kv"
  "nq500_rag5_sac5_grounded.json::$NQ --passages 5 --limit 500 --grounded --reuse-kv"
  "squad500_sac5.json::$SQ --limit 500"
  "nq500_sac5.json::$NQ --limit 500"
  "squad500_rag5_sac5.json::$SQ --passages 5 --limit 500 --reuse-kv"
  "nq500_rag5_sac5.json::$NQ --passages 5 --limit 500 --reuse-kv"
  "squad_rag5_sac5.json::$SQ --passages 5 --limit 200 --reuse-kv"
  "nq_rag5_sac5.json::$NQ --passages 5 --limit 200 --reuse-kv"
  "nq_sac5.json::$NQ --limit 200"
  "squad_sac5_2shot.json::$SQ --shots 2 --limit 200"
)
for job in "${jobs[@]}"; do
  f=${job%%::*} opts=${job#*::} claim=$R/claim-$(basename $f .json)
  [ -f $O/$f ] && continue
  mkdir $claim 2>/dev/null || continue  # another worker has it
  .venv/bin/sac-rag eval --method sac --ratio 5 --dtype float32 --device cpu --adapter $A $opts --json $O/$f \
    > $R/log_$(basename $f .json).txt 2>&1
  echo "$(date +%T) done $f rc=$?" >> $R/progress.txt
  rmdir $claim
done
