#!/usr/bin/env bash
# The CUDA paths the CPU test-suite cannot run, in one go on a GPU machine (about 5 min on one H200):
#   0. the CUDA-only tests (CUDA graphs against eager runs)
#   1. benchmarks/bench_model.py on CUDA: tiny and cogact-base (LLaMA-2-7B shapes, random weights, bf16) latency per
#      active-layer count k, eager and with CUDA graphs: does skipping layers really save time on the paper's shapes?
#   2. replay of the bundled sample bag through models/default on CUDA and on this machine's CPU (node-core latency)
#   3. one-GPU training of the bundled model's preset (sim-default): bf16 vs fp32 step time, stage 2 from stage 1,
#      resume from a mid-run checkpoint against the uninterrupted run
#   4. FSDP (one process: a group of one) for sim-default stages 1 and 2, and cogact-base stage 1 at 16 and 32 layers
#      (peak GPU memory in the training summary; the 32-layer run needs ~130 GiB of GPU memory and writes a 27 GB
#      final checkpoint under WORK)
#
#   DATA=<dataset, 2 views at 128 px> DATA224=<dataset, 1 view at 224 px> OUT=<dir> bash scripts/gpu_check.sh
#
# Any recorded or simulated dataset will do (`mole-vla dataset build`); synthetic bags are enough for timings:
#   python -c "from mole_vla_ros.replay.synthetic import write_synthetic_bag as w; [w(f'bags/ep{i}', duration_s=3.0,
#     image_size=128) for i in range(8)]"
#   mole-vla dataset build bags/ep* --out data128 --rate 10 --image-size 128 \
#     --camera-topic scene=/camera/scene/image_raw --camera-topic wrist=/camera/wrist/image_raw --instruction "pick"
# Each step has its own time limit; a failed step is reported and the next one runs. Prints a summary at the end.
# Results of one run on an H200: benchmarks/results/h200-2026-12-04/ (README.md there).
set -uo pipefail

PY=${PY:-python3}
OUT=${OUT:-runs/gpu_check}
DATA=${DATA:?set DATA to a dataset with the sim-default views (2 cameras, 128 px)}
DATA224=${DATA224:-}
WORK=${WORK:-/tmp/gpu_check}
DEVICE=${DEVICE:-cuda}  # cpu: a dry run of this script's plumbing (CUDA-only parts are skipped or fail)
N1=${N1:-300}           # stage-1 steps (checkpoint and resume point at N1 / 3); stage 2 runs 2 * N1 / 3
CLI="$PY -m mole_vla_ros.cli"
TRAIN="$CLI train --no-progress --device $DEVICE"
mkdir -p "$OUT" "$WORK"
export PYTHONUNBUFFERED=1
RESULTS=()
SECONDS=0

step() { # step NAME LIMIT_S command...: run with a time limit, record PASS/FAIL and the seconds it took
  local name=$1 limit=$2 t0=$SECONDS rc
  shift 2
  echo
  echo "=================== $name (limit ${limit}s, at ${SECONDS}s)"
  timeout "$limit" "$@"
  rc=$?
  RESULTS+=("$(printf '%-34s %s  %4ds' "$name" "$([ $rc -eq 0 ] && echo PASS || echo "FAIL rc=$rc")" $((SECONDS - t0)))")
  return $rc
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"

step "CUDA-only tests" 120 $PY -m pytest -q -p no:cacheprovider test/test_model_cuda_graphs.py
step "bench_model tiny+cogact-base" 240 $PY benchmarks/bench_model.py --device cuda --presets tiny cogact-base \
  --repeats 15 --warmup 3 --json "$OUT/bench_model_cuda.json"

step "replay models/default cuda" 90 $CLI replay models/samples/sim_pick_seed000000 --out "$WORK/replay_cuda" \
  --device cuda --active-layers 8 4 --no-plots --no-progress && cp "$WORK/replay_cuda/compare.json" "$OUT/replay_cuda.json"
step "replay models/default cpu" 90 $CLI replay models/samples/sim_pick_seed000000 --out "$WORK/replay_cpu" \
  --device cpu --active-layers 8 4 --no-plots --no-progress && cp "$WORK/replay_cpu/compare.json" "$OUT/replay_cpu.json"

N0=$((N1 / 3))
CKPT=$(printf 'step_%07d' $N0)
S1="--preset sim-default --precision bf16 --data $DATA --stage full --log-interval $N0 --eval-interval $N0 --save-interval $N0"
S1="$S1 --keep-checkpoints 5"
step "sim-default stage 1 bf16 $N1" 120 $TRAIN $S1 --steps $N1 --out "$WORK/full_bf16"
step "sim-default stage 1 fp32 $N0" 60 $TRAIN $S1 --steps $N0 --precision fp32 --out "$WORK/full_fp32"
# resume: the uninterrupted run's checkpoint at N1 / 3, continued to N1 in a fresh directory
mkdir -p "$WORK/full_resumed/checkpoints" && cp -r "$WORK/full_bf16/checkpoints/$CKPT" "$WORK/full_resumed/checkpoints/"
step "sim-default stage 1 resume $N0->$N1" 120 $TRAIN $S1 --steps $N1 --resume auto --out "$WORK/full_resumed"
S2="--preset sim-default --precision bf16 --data $DATA --stage mole --init-from $WORK/full_bf16/final --log-interval $N0"
step "sim-default stage 2 (STAR+CogKD) $((2 * N0))" 120 $TRAIN $S2 --steps $((2 * N0)) --out "$WORK/mole_bf16"
step "sim-default stage 1 FSDP $N1" 120 $TRAIN $S1 --steps $N1 --strategy fsdp --out "$WORK/full_fsdp"
step "sim-default stage 2 FSDP $N0" 120 $TRAIN $S2 --steps $N0 --strategy fsdp --out "$WORK/mole_fsdp"

if [ -n "$DATA224" ]; then
  CB="--preset cogact-base --data $DATA224 --stage full --batch-size 8 --steps 8 --log-interval 2 --eval-batches 1"
  step "cogact-base FSDP 16 layers" 240 $TRAIN $CB --model-override llm.num_layers=16 \
    --model-override active_layers=8 --out "$WORK/cogact16"
  step "cogact-base FSDP 32 layers" 300 $TRAIN $CB --out "$WORK/cogact32"
fi

echo
echo "=================== training summaries"
$PY - "$WORK" "$OUT/training.json" <<'EOF'
import json, sys
from pathlib import Path
work, rows = Path(sys.argv[1]), {}
for f in sorted(work.glob("*/summary.json")):
    s = json.loads(f.read_text())
    losses = s.pop("losses")
    s["loss_first_last"] = [losses[0], losses[-1]] if losses else []
    s["seconds_per_step"] = s["seconds"] / max(s["steps"] - s["start_step"], 1)
    rows[f.parent.name] = s
    mem = s.get("peak_gpu_memory_gib")
    print(f"{f.parent.name:14s} {s['stage']:5s} {s['device']:7s} {s['precision']:13s} {s['strategy'] or '-':5s} "
          f"steps {s['start_step']:>3}->{s['steps']:<4} {1e3 * s['seconds_per_step']:8.1f} ms/step  "
          f"loss {s['final_loss']:.4f}  val {s['val_loss'] if s['val_loss'] is not None else float('nan'):.4f}  "
          f"peak {mem if mem is not None else float('nan'):6.1f} GiB")
a, b = work / "full_bf16/final/model.safetensors", work / "full_resumed/final/model.safetensors"
if a.is_file() and b.is_file():
    from safetensors.torch import load_file
    ta, tb = load_file(a), load_file(b)
    diff = max((ta[k].float() - tb[k].float()).abs().max().item() for k in ta)
    rows["resume_max_abs_weight_diff"] = diff
    print(f"resumed run vs uninterrupted run: largest weight difference {diff:.3g} ({'bit-exact' if diff == 0 else 'not bit-exact'})")
Path(sys.argv[2]).write_text(json.dumps(rows, indent=2))
EOF
echo
echo "=================== steps (${SECONDS}s in all)"
printf '%s\n' "${RESULTS[@]}"
