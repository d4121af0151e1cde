#!/bin/bash
# One-shot GPU session: (1) continue SARMAE pretraining (MAE + SARE) on CUDA for a fixed
# wall-clock budget, (2) export the encoder, (3) CUDA-vs-CPU check of the encoder, (4) the test
# suite on the GPU machine. Everything it returns is under $OUT.
# Payload (.devdata/, ignored): wheels of rasterio 1.3.11 (cp312) and of typer/pydantic, smp,
# affine, cligj, click-plugins; init.safetensors; data.tar (the manifest's files + mix.txt).
# Local dry run: DEV=cpu OUT=/tmp/devout BUDGET=60 BS=8 WORKERS=1 TEST_S=0 bash run_on_gpu.sh
set -u
export PYTHONUNBUFFERED=1
T0=$(date +%s)
el() { echo $(($(date +%s) - T0)); }
DEV=${DEV:-cuda}
BUDGET=${BUDGET:-560}   # seconds for the whole script
TEST_S=${TEST_S:-100}   # seconds kept for pytest at the end
BS=${BS:-512}
WORKERS=${WORKERS:-14}
LR=${LR:-3e-4}
D=.devdata
mkdir -p "$OUT"
if ! python3 -c "import rasterio, segmentation_models_pytorch" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $D/whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
S="python3 -m sarmae_cli"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  nproc
  python3 -c "import torch, rasterio, timm, segmentation_models_pytorch as s, onnxruntime as o; print('torch', torch.__version__, torch.cuda.is_available(), 'rasterio', rasterio.__version__, 'timm', timm.__version__, 'smp', s.__version__, 'ort', o.__version__, o.get_available_providers())"
} 2>&1 | tee $OUT/env.txt

rm -rf /tmp/devdata && mkdir -p /tmp/devdata && tar -xf $D/data.tar -C /tmp/devdata || exit 1
common=(/tmp/devdata/data/mix.txt --model tiny --chip-size 128 --no-sarc --init $D/init.safetensors --config $D/devpt.yaml
  --batch-size $BS --workers $WORKERS --device $DEV --lr $LR --log-every 10 -q)

# 1. probe: 30 steps to measure samples/s on this machine
echo "[$(el)s] probe" | tee -a $OUT/run.log
$S pretrain "${common[@]}" --max-steps 60 --ckpt-every 0 -o /tmp/probe >> $OUT/run.log 2>&1 || { echo "probe failed"; tail -30 $OUT/run.log; exit 1; }
SPS=$(python3 - <<'EOF'
import csv
rows = list(csv.DictReader(open('/tmp/probe/log.csv')))
import statistics; print(statistics.median(float(r['samples_per_s']) for r in rows[2:]) if len(rows) > 2 else 0)
EOF
)
echo "[$(el)s] probe samples/s: $SPS" | tee -a $OUT/run.log

# 2. main run: as many steps as fit the budget (cosine schedule over exactly those steps)
LEFT=$((BUDGET - TEST_S - 45 - $(el)))
STEPS=$(python3 -c "print(max(20, int(0.9 * $SPS * ($LEFT - 25) / $BS)))")
echo "[$(el)s] main run: $STEPS steps of $BS in ~${LEFT}s" | tee -a $OUT/run.log
timeout $((LEFT + 20)) $S pretrain "${common[@]}" --max-steps $STEPS --ckpt-every 250 -o /tmp/gpu_pt >> $OUT/run.log 2>&1
rc=$?; echo "[$(el)s] main run rc=$rc" | tee -a $OUT/run.log
cp /tmp/gpu_pt/log.csv $OUT/log.csv; cp /tmp/gpu_pt/data_report.json $OUT/data_report.json 2>/dev/null

# 3. export (a snapshot when the run did not finish) + CUDA-vs-CPU check
if [ -f /tmp/gpu_pt/encoder.safetensors ]; then FULL=/tmp/gpu_pt/encoder.safetensors; else
  $S weights snapshot /tmp/gpu_pt -o /tmp/gpu_full.safetensors >> $OUT/run.log 2>&1; FULL=/tmp/gpu_full.safetensors; fi
$S weights convert $FULL -o $OUT/enc_gpu_fp16.safetensors --fp16 --drop-mae-decoder >> $OUT/run.log 2>&1
python3 - "$FULL" "$OUT/dec_gpu_fp32.safetensors" >> $OUT/run.log 2>&1 <<'EOF'
import sys
from safetensors import safe_open
from safetensors.torch import save_file
with safe_open(sys.argv[1], "pt") as f:
    dec = {k: f.get_tensor(k) for k in f.keys() if not k.startswith("encoder.")}
    meta = f.metadata()
save_file(dec, sys.argv[2], metadata=meta)
print("decoder part:", len(dec), "tensors")
EOF
python3 benchmarks/gpu_stage/gpu_check.py "$OUT/enc_gpu_fp16.safetensors" "$DEV" 2>&1 | tee $OUT/gpu_check.txt
echo "[$(el)s] exported" | tee -a $OUT/run.log
ls -la $OUT | tee -a $OUT/run.log

# 4. the test suite on this machine (tests pick CUDA through device 'auto')
T=$((BUDGET - $(el) - 10))
if [ $T -gt 20 ]; then
  timeout $T python3 -m pytest -q -n 12 -p no:cacheprovider -rfE --timeout 90 tests > $OUT/pytest.log 2>&1
  rc=$?; echo "[$(el)s] pytest rc=$rc ($T s allowed)" | tee -a $OUT/run.log
  tail -60 $OUT/pytest.log
fi
tail -5 $OUT/run.log
