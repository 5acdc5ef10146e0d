#!/usr/bin/env bash
# The trainer's GPU checks in one go, run on a CUDA machine from the source tree with that
# machine's own PyTorch (no install, no Dagster). Stages in order of what matters most, each
# under its own time limit so one that fails or overruns leaves the others' tables; logs go to
# $OUT (the device tool's folder) or benchmarks/out/. STAGES picks stages; the default four stop
# within their limits' 545 s (plus start-ups), so they fit one device call. `warm` goes first: it
# compiles and tunes the fused Triton kernels for every length (on an H200 this took most of a
# 95 s speed stage for its first length; Triton caches both on disk), so the stages after it time
# training, not that.
#   bash benchmarks/gpu_trainer.sh
#   STAGES="warm check profile blocks" bash benchmarks/gpu_trainer.sh  # correctness, top kernels
#   STAGES="compile grouped" bash benchmarks/gpu_trainer.sh   # torch.compile, the old cuDNN path
set -u
out=${OUT:-benchmarks/out}
mkdir -p "$out"
export PYTHONPATH=. PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv \
  | tee "$out/gpu.txt"
python3 -c "import torch, numpy, pandas, sklearn; print('torch', torch.__version__, 'cuda',
torch.version.cuda, 'numpy', numpy.__version__, 'pandas', pandas.__version__, 'sklearn',
sklearn.__version__)" 2>&1 | tee -a "$out/gpu.txt"
python3 -c "import triton; print('triton', triton.__version__)" 2>&1 | tail -1 \
  | tee -a "$out/gpu.txt"

stage() {
  local name=$1 limit=$2
  shift 2
  case " ${STAGES:-warm speed cohort agree} " in *" $name "*) ;; *) return ;; esac
  echo "== $name ($limit s): $*"
  local start=$SECONDS
  timeout "$limit" python3 benchmarks/gpu_trainer.py "$@" 2>&1 \
    | grep -v "Warning: \|configure_threads()" | tee "$out/$name.txt"
  echo "== $name took $((SECONDS - start)) s"
}

stage warm 200 warm --genes 24
stage check 60 check
stage speed 150 speed --genes 24
stage cohort 120 cohort --genes 700 --blocks 2 --block 10
stage profile 40 profile --genes 8 --epochs 4 --rows 16
stage agree 75 agree --genes 4
stage compile 240 variants --genes 24 --epochs 8 --variants matmul compiled
stage grouped 60 variants --genes 24 --epochs 8 --variants grouped
stage blocks 90 variants --genes 24 --epochs 8 --variants fused fused-fixed
