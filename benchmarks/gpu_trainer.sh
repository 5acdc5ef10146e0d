#!/usr/bin/env bash
# The trainer's GPU checks, run on a CUDA machine from the source tree with that machine's own
# PyTorch (no install, no Dagster): reference loop vs fast trainer, per gene and with genes of
# one window length stacked, then early stopping for the R² agreement. Logs go to $OUT (the
# device tool's folder) or benchmarks/out/.
#   bash benchmarks/gpu_trainer.sh
set -u
out=${OUT:-benchmarks/out}
mkdir -p "$out"
export PYTHONPATH=. PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" \
  | tee -a "$out/gpu.txt"

speed() {
  local name=$1 limit=$2
  shift 2
  echo "== $name: $*"
  timeout "$limit" python3 benchmarks/trainer_speed.py --device cuda --samples 873 "$@" 2>&1 \
    | tee "$out/$name.txt"
}

speed per_gene 150 --genes 6 --epochs 20 --verbose
speed stacked 200 --genes 4 --copies 32 --epochs 50 --together --reference-genes 4
speed early 200 --genes 4 --copies 8 --mode early --max-epochs 300 --patience 30 --together \
  --reference-genes 4
