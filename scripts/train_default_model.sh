#!/usr/bin/env bash
# Reproduce models/default from nothing on a CPU: simulated demonstrations -> dataset -> stage 1 (full depth) ->
# stage 2 (MoLe, STAR + CogKD) and its no-CogKD ablation -> held-out evaluation -> copy into models/default.
#
#   make default-model                       # or: bash scripts/train_default_model.sh
#   STEPS1=800 STEPS2=500 bash scripts/train_default_model.sh     # shorter run (what MODEL_CARD.md says was used)
#
# Every stage resumes (--resume auto) and finished stages are skipped, so the script can be re-run after a stop.
# Budget on a 2-core CPU: recording ~10 min, vision features ~5 min, stage 1 ~2 s/step, stage 2 runs and the
# ablation side by side (one thread each), evaluation a few minutes.
set -euo pipefail

PY=${PY:-.venv/bin/python}
WORK=${WORK:-runs/default_model}
EPISODES=${EPISODES:-100}        # scripted pick demonstrations, seeds 1000..1099 (closed-loop evaluation: 5000..)
STEPS1=${STEPS1:-1500}           # stage 1 optimizer steps (batch 32)
STEPS2=${STEPS2:-1000}           # stage 2 optimizer steps (batch 32), also for the ablation
SIM_EPISODES=${SIM_EPISODES:-10} # closed-loop episodes per setting in the simulator (0 = skip)
DEST=${DEST:-models/default}
CLI="$PY -m mole_vla_ros.cli"
TRAIN="$CLI train --preset sim-default --data $WORK/dataset --no-progress --resume auto"

mkdir -p "$WORK"
if [ ! -d "$WORK/episodes_pick" ]; then
  $CLI sim record --task pick --episodes "$EPISODES" --seed 1000 --image-size 128 --out "$WORK/episodes_pick"
fi
if [ ! -f "$WORK/dataset/meta.json" ]; then
  $CLI dataset build "$WORK/episodes_pick" --out "$WORK/dataset" --rate 10 --image-size 128
fi

# stage 1: every layer runs (the CogACT role); computes and caches the frozen EfficientNet-Lite0 features
$TRAIN --stage full --steps "$STEPS1" --out "$WORK/full" 2>&1 | tee "$WORK/full.log"

# stage 2: STAR router at k = 4 of 8 layers + CogKD from the EMA teacher; and the same without CogKD
$TRAIN --stage mole --init-from "$WORK/full/final" --steps "$STEPS2" --out "$WORK/mole" > "$WORK/mole.log" 2>&1 &
P1=$!
$TRAIN --stage mole --init-from "$WORK/full/final" --steps "$STEPS2" --no-cogkd --out "$WORK/mole_nokd" \
  > "$WORK/mole_nokd.log" 2>&1 &
P2=$!
wait $P1
wait $P2
tail -n 8 "$WORK/mole.log" "$WORK/mole_nokd.log"

# held-out episodes (the dataset's validation split): full depth, MoLe, random skip, early exit, no CogKD
$CLI evaluate --checkpoint "$WORK/mole/final" --baseline-checkpoint "$WORK/full/final" \
  --ablation-checkpoint "$WORK/mole_nokd/final" --data "$WORK/dataset" --out "$WORK/eval" --no-progress \
  --repeats 3 --threads 1

if [ "$SIM_EPISODES" -gt 0 ]; then
  # closed loop through the runtime core, at full depth and at k = 4, on seeds never recorded for training
  OMP_NUM_THREADS=1 $CLI sim eval --checkpoint "$WORK/mole/final" --task pick --episodes "$SIM_EPISODES" \
    --seed 5000 --image-size 128 --skip-mode full star --active-layers 4 --json "$WORK/eval/sim_eval.json"
fi

mkdir -p "$DEST/eval"
cp "$WORK/mole/final/config.json" "$WORK/mole/final/model.safetensors" "$WORK/mole/final/normalization.json" "$DEST/"
cp "$WORK/eval/eval.json" "$WORK/eval/eval.txt" "$WORK/eval/eval.png" "$DEST/eval/"
cp "$WORK/full/summary.json" "$DEST/eval/summary_stage1.json"
cp "$WORK/mole/summary.json" "$DEST/eval/summary_stage2.json"
cp "$WORK/mole_nokd/summary.json" "$DEST/eval/summary_stage2_nocogkd.json"
if [ -f "$WORK/eval/sim_eval.json" ]; then cp "$WORK/eval/sim_eval.json" "$DEST/eval/"; fi
echo "models/default updated from $WORK (see $DEST/eval/eval.txt)"
