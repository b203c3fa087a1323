#!/usr/bin/env bash
# session 28's candidates (README.md here): session 22's recipe in bf16 from the shipped adapters, gold last 0.75,
# seed 28, 374 steps; x5hn50s28 adds --hard-negatives 0.5. Usage: train.sh x5hn50s28 | train.sh x15s28
R=~/.cache/sac-rag/runs/s28
common="--gold-last 0.75 --seed 28 --steps 374 --decay-steps 152 --time-budget 0 --dtype bfloat16"
case $1 in
  x5hn50s28) exec /work/main/docs/evals/selection/s22/train.sh x5hn50s28 $common --hard-negatives 0.5 --out $R/x5hn50s28 ;;
  x15s28) exec /work/main/docs/evals/selection/s22/train.sh x15s28 $common --ratio 15 \
            --init-adapter sac_rag/adapters/gemma-3-270m-x15 --out $R/x15s28 ;;
esac
