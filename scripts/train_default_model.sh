#!/usr/bin/env bash
# Reproduce models/default from nothing on a CPU: simulated demonstrations -> dataset -> stage 1 (full depth) ->
# stage 2 (MoLe: STAR + CogKD) with its ablation (no CogKD) and the trained skip baselines (random skip, early exit,
# same recipe and budget) -> held-out evaluation -> closed loop in the simulator -> copy into models/default.
#
#   make default-model                       # or: bash scripts/train_default_model.sh
#   STEPS1=500 STEPS2=300 bash scripts/train_default_model.sh     # a quick, much weaker run
#
# Every stage resumes (--resume auto) and finished stages are skipped, so the script can be re-run after a stop.
# Measured on this 2-core CPU (MODEL_CARD.md): about 90 minutes in all: recording ~2 min, dataset ~1 min, vision
# features ~3 min, stage 1 ~0.75 s/step on two threads (~40 min), the four stage-2 runs two at a time on one thread
# each (~36 min), offline evaluation ~6 min, closed loop ~2 min.
set -euo pipefail

PY=${PY:-.venv/bin/python}
WORK=${WORK:-runs/default_model}
EPISODES=${EPISODES:-200}        # scripted pick demonstrations, seeds 1000..1199 (closed-loop evaluation: 5000..)
STEPS1=${STEPS1:-3000}           # stage 1 optimizer steps (batch 32)
STEPS2=${STEPS2:-1000}           # stage 2 optimizer steps (batch 32), for MoLe and each comparison run
SIM_EPISODES=${SIM_EPISODES:-30} # closed-loop episodes per setting in the simulator (0 = skip)
EVAL_SAMPLES=${EVAL_SAMPLES:-480} # held-out samples for the offline comparison (fixed random subset)
THREADS=${THREADS:-$(nproc)}     # torch threads for stage 1; stage-2 runs use one thread each, $THREADS at a time
DEST=${DEST:-models/default}
CLI="$PY -m mole_vla_ros.cli"
TRAIN="$CLI train --preset sim-default --data $WORK/dataset --no-progress --resume auto"
STAGE1="$WORK/full/final"

mkdir -p "$WORK"
SECONDS=0
stamp() { echo "[$(date +%H:%M:%S), ${SECONDS}s] $*"; }

if [ ! -d "$WORK/episodes_pick" ]; then
  stamp "recording $EPISODES simulated pick demonstrations"
  $CLI sim record --task pick --episodes "$EPISODES" --seed 1000 --image-size 128 --out "$WORK/episodes_pick" \
    2>&1 | tail -n 3
fi
if [ ! -f "$WORK/dataset/meta.json" ]; then
  stamp "building the dataset"
  $CLI dataset build "$WORK/episodes_pick" --out "$WORK/dataset" --rate 10 --image-size 128
fi

# stage 1: every layer runs (the CogACT role); computes and caches the frozen EfficientNet-Lite0 features
if [ ! -f "$STAGE1/model.safetensors" ]; then
  stamp "stage 1: full depth, $STEPS1 steps"
  $TRAIN --stage full --steps "$STEPS1" --threads "$THREADS" --out "$WORK/full" > "$WORK/full.log" 2>&1
  tail -n 8 "$WORK/full.log"
fi

# stage 2, all from the stage-1 model with the same steps, data order and EMA teacher where CogKD is on:
#   mole       STAR router at k = 4 of 8 layers + CogKD   (this is models/default)
#   mole_nokd  the same without CogKD                     (the paper's ablation)
#   random     k random layers per sample + CogKD         (trained random-skip baseline)
#   early      the first k layers + CogKD                 (trained early-exit baseline)
stamp "stage 2: MoLe, MoLe w/o CogKD, random skip, early exit; $STEPS2 steps each, $THREADS at a time"
declare -A STAGE2_ARGS=(
  [mole]=""
  [mole_nokd]="--no-cogkd"
  [random]="--skip-mode random"
  [early]="--skip-mode early"
)
RUNNING=()
for name in mole mole_nokd random early; do
  if [ -f "$WORK/$name/final/model.safetensors" ]; then continue; fi
  # shellcheck disable=SC2086
  $TRAIN --stage mole --init-from "$STAGE1" --steps "$STEPS2" --threads 1 ${STAGE2_ARGS[$name]} \
    --out "$WORK/$name" > "$WORK/$name.log" 2>&1 &
  RUNNING+=($!)
  if [ "${#RUNNING[@]}" -ge "$THREADS" ]; then
    wait "${RUNNING[0]}"
    RUNNING=("${RUNNING[@]:1}")
  fi
done
for pid in "${RUNNING[@]}"; do wait "$pid"; done
for name in mole mole_nokd random early; do
  echo "== $name"
  tail -n 7 "$WORK/$name.log"
done

# held-out episodes (the dataset's validation split): full depth, MoLe, no CogKD, trained and training-free baselines
stamp "offline evaluation on held-out episodes"
$CLI evaluate --checkpoint "$WORK/mole/final" --baseline-checkpoint "$STAGE1" \
  --ablation-checkpoint "$WORK/mole_nokd/final" --random-checkpoint "$WORK/random/final" \
  --early-checkpoint "$WORK/early/final" --data "$WORK/dataset" --out "$WORK/eval" --no-progress \
  --repeats 3 --max-samples "$EVAL_SAMPLES" --threads "$THREADS"

if [ "$SIM_EPISODES" -gt 0 ]; then
  # closed loop through the runtime core, on seeds never recorded for training: the MoLe model at full depth and at
  # k = 4, and each trained comparison in the mode it was trained for
  stamp "closed loop in the simulator, $SIM_EPISODES episodes per setting"
  export OMP_NUM_THREADS=1
  SIM="$CLI sim eval --task pick --episodes $SIM_EPISODES --seed 5000 --image-size 128 --active-layers 4"
  run_sim() { # json/txt name, checkpoint, skip modes...
    local name=$1 ckpt=$2
    shift 2
    $SIM --checkpoint "$ckpt" --skip-mode "$@" --json "$WORK/eval/$name.json" > "$WORK/eval/$name.txt" 2>&1
  }
  run_sim sim_eval "$WORK/mole/final" full star &
  P1=$!
  run_sim sim_eval_nocogkd "$WORK/mole_nokd/final" star &
  P2=$!
  wait $P1
  wait $P2
  run_sim sim_eval_random "$WORK/random/final" random &
  P1=$!
  run_sim sim_eval_early "$WORK/early/final" early &
  P2=$!
  wait $P1
  wait $P2
  run_sim sim_eval_stage1 "$STAGE1" full
  tail -n 6 "$WORK"/eval/sim_eval*.txt
  unset OMP_NUM_THREADS
fi

mkdir -p "$DEST/eval"
cp "$WORK/mole/final/config.json" "$WORK/mole/final/model.safetensors" "$WORK/mole/final/normalization.json" "$DEST/"
cp "$WORK/eval/eval.json" "$WORK/eval/eval.txt" "$WORK/eval/eval.png" "$DEST/eval/"
cp "$WORK/full/summary.json" "$DEST/eval/summary_stage1.json"
for name in mole mole_nokd random early; do
  cp "$WORK/$name/summary.json" "$DEST/eval/summary_stage2_$name.json"
done
for f in "$WORK"/eval/sim_eval*.json; do
  if [ -f "$f" ]; then cp "$f" "$DEST/eval/"; fi
done
stamp "models/default updated from $WORK (see $DEST/eval/eval.txt)"
