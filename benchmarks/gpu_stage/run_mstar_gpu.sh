#!/bin/bash
# MSTAR fine-tuning on one GPU (second GPU session): 12 `sarmae finetune` runs side by side, each
# for about the same number of optimizer steps, sized by a short probe to fill the time budget.
#   s*: 40-shot on the validation split of train (seed 0): picks the input framing
#   t*: 40-shot, seeds 0, 1, 2, scored on the test folder
#   p*: 30 %, seed 0; a*: all training chips (candidate shipped classifier)
#   *N: native centre 64 px (4 x 4 tokens); *Z: the same 64 px zoomed to 128 (8 x 8 tokens)
# Payload (.devdata/, ignored): whl/ (rasterio, typer, pydantic, smp and their small deps) and
# mstar64/ (pack_mstar_centres.py: the centre 64 px of every chip, identical model input).
# JOBSET=random: 40-shot from random init (zoomed input, seeds 0-2); FIXED_STEPS=N: that budget
# or nothing. Local dry run: DEV=cpu OUT=/tmp/devout BUDGET=150 PROBE=4 bash benchmarks/gpu_stage/run_mstar_gpu.sh
set -u
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
T0=$(date +%s)
el() { echo $(($(date +%s) - T0)); }
DEV=${DEV:-cuda}
BUDGET=${BUDGET:-530}  # seconds for the whole script
PROBE=${PROBE:-150}    # probe steps per run
WORKERS=${WORKERS:-1}
TAIL=${TAIL:-75}       # seconds kept after training for evaluation, export and packing
D=.devdata
M=$D/mstar64
W=/tmp/mstar_runs
mkdir -p "$OUT"
rm -rf $W && mkdir -p $W
log() { echo "[$(el)s] $*" | tee -a "$OUT/run.log"; }
if ! python3 -c "import rasterio, segmentation_models_pytorch, pydantic" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $D/whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
S="python3 -m sarmae_cli"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  nproc
  python3 -c "import torch, rasterio, timm, typer; print('torch', torch.__version__, torch.cuda.is_available(), 'rasterio', rasterio.__version__, 'timm', timm.__version__, 'typer', typer.__version__)"
} 2>&1 | tee "$OUT/env.txt"
python3 -c "import sarmae_cli.cli, sarmae_cli.train.finetune" 2>&1 | tee -a "$OUT/env.txt" | tail -3
[ "${PIPESTATUS[0]}" = 0 ] || { log "sarmae_cli does not import"; exit 1; }

# name | steps per epoch (batch 32, last partial batch dropped) | data, protocol and start | framing
I="--init default"
R="--init random --model tiny"
if [ "${JOBSET:-main}" = random ]; then  # random init at the 40-shot budget of the main set
  JOBS=(
    "rZ0|12|$M/train --val $M/test --shots 40 --seeds 0 $R|Z"
    "rZ1|12|$M/train --val $M/test --shots 40 --seeds 1 $R|Z"
    "rZ2|12|$M/train --val $M/test --shots 40 --seeds 2 $R|Z"
  )
else
  JOBS=(
    "sN|12|$M/train --val-fraction 0.2 --shots 40 --seeds 0 $I|N"
    "sZ|12|$M/train --val-fraction 0.2 --shots 40 --seeds 0 $I|Z"
    "tN0|12|$M/train --val $M/test --shots 40 --seeds 0 $I|N"
    "tN1|12|$M/train --val $M/test --shots 40 --seeds 1 $I|N"
    "tN2|12|$M/train --val $M/test --shots 40 --seeds 2 $I|N"
    "tZ0|12|$M/train --val $M/test --shots 40 --seeds 0 $I|Z"
    "tZ1|12|$M/train --val $M/test --shots 40 --seeds 1 $I|Z"
    "tZ2|12|$M/train --val $M/test --shots 40 --seeds 2 $I|Z"
    "pN|25|$M/train --val $M/test --fraction 0.3 --seeds 0 $I|N"
    "pZ|25|$M/train --val $M/test --fraction 0.3 --seeds 0 $I|Z"
    "aN|85|$M/train --val $M/test --seeds 0 $I|N"
    "aZ|85|$M/train --val $M/test --seeds 0 $I|Z"
  )
fi
common="--task classification --batch-size 32 --lr 1e-3 --config docs/model_cards/configs/ft_cls.yaml --device $DEV --workers $WORKERS -q"
framing() { if [ "$1" = N ]; then echo "--chip-size 64 --fit center_crop"; else echo "--set data.crop=64 --chip-size 128"; fi; }

# launch DIR STEPS|probe: every job at once; each gets --epochs round(STEPS / steps per epoch)
launch() {
  local dir=$1 steps=$2 pids=()
  mkdir -p "$dir"
  for j in "${JOBS[@]}"; do
    IFS='|' read -r name spe data fr <<<"$j"
    if [ "$steps" = probe ]; then len="--epochs 100000 --max-steps $PROBE"; else
      len="--epochs $(python3 -c "print(max(1, round($steps / $spe)))")"; fi
    echo "$S finetune $data $common $(framing "$fr") $len -o $dir/$name.safetensors" >"$dir/$name.cmd"
    # shellcheck disable=SC2086
    $S finetune $data $common $(framing "$fr") $len -o "$dir/$name.safetensors" >"$dir/$name.log" 2>&1 &
    pids+=($!)
  done
  local bad=0
  for p in "${pids[@]}"; do wait "$p" || bad=$((bad + 1)); done
  return $bad
}

# 1. probe: every run for PROBE steps, all at once; the slowest run's steps/s sizes the main runs
log "probe: ${#JOBS[@]} runs x $PROBE steps"
launch $W/probe probe || { log "probe: some runs failed"; tail -5 $W/probe/*.log; cp $W/probe/*.log "$OUT/" 2>/dev/null; exit 1; }
read -r RATE START < <(python3 - $W/probe <<'EOF'
import csv, glob, statistics, sys
rates, starts = [], []
for f in glob.glob(f"{sys.argv[1]}/*.run/seed*/log.csv"):
    rows = list(csv.DictReader(open(f)))
    rates.append(statistics.median(float(r["samples_per_s"]) for r in rows[len(rows) // 2:]) / 32)
print(f"{min(rates):.2f} {statistics.median(rates):.2f}")
EOF
)
PROBE_S=$(el)
log "probe done: slowest run $RATE steps/s (median $START)"

# 2. main runs: about STEPS steps each, ending TAIL s before the budget (evaluation, export)
STEPS=$(python3 -c "print(int(0.85 * $RATE * ($BUDGET - $PROBE_S - 30 - $TAIL)))")
if [ -n "${FIXED_STEPS:-}" ]; then  # a set budget (e.g. 4752 = 396 epochs at 40-shot): run it only if it fits
  [ "$STEPS" -ge "$FIXED_STEPS" ] || { log "main: $FIXED_STEPS steps do not fit (~$STEPS); not run"; exit 0; }
  STEPS=$FIXED_STEPS
fi
log "main: ~$STEPS steps per run"
timeout $((BUDGET - $(el) - TAIL + 30)) bash -c "$(declare -f launch framing); $(declare -p JOBS); S='$S'; common='$common'; PROBE=$PROBE; launch $W/main $STEPS"
rc=$?
pkill -f "sarmae_cli finetune" && sleep 2  # after a timeout: the runs that are left
log "main rc=$rc"

# 3. bring back: metrics, logs, commands; the all-chip classifiers in fp16
for n in aN aZ; do
  [ -f $W/main/$n.safetensors ] && $S weights convert $W/main/$n.safetensors --fp16 -o "$OUT/${n}_fp16.safetensors" >>"$OUT/run.log" 2>&1
done
(cd $W && tar -czf "$OUT/results.tar.gz" probe/*.cmd main/*.cmd main/*.log main/*.metrics.json main/*.confusion.png \
  main/*.run/seed*/log.csv probe/*.run/seed*/log.csv 2>/dev/null)
python3 - $W/main <<'EOF' | tee -a "$OUT/run.log"
import glob, json, os, sys
for f in sorted(glob.glob(f"{sys.argv[1]}/*.metrics.json")):
    s = json.load(open(f))["summary"]
    print(os.path.basename(f).split(".")[0], f"OA {100 * s['overall_accuracy']['mean']:.2f}",
          f"mCA {100 * s['mean_class_accuracy']['mean']:.2f}")
EOF
log "done"
