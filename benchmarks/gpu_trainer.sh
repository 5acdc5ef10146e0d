#!/usr/bin/env bash
# The trainer's GPU checks in one go, run on a CUDA machine from the source tree with that
# machine's own PyTorch (no install, no Dagster). Stages in order of what matters most, each
# under its own time limit so one that fails or overruns leaves the others' tables; logs go to
# $OUT (the device tool's folder) or benchmarks/out/. STAGES picks stages; the default ones stop
# within their limits' 410 s (plus start-ups), so they fit one device call. `warm` goes first: it
# compiles and tunes the fused Triton kernels for every length (on an H200 this took most of a
# 95 s speed stage for its first length), so the stages after it time training, not that.
# Triton's cache (compiled kernels and tuning results) goes back as $OUT/triton.txz (xz: the
# gzip of an H100's cache outgrew the device tool's 16 MiB per file; xz packs it about 3x
# smaller); put it in .tcache/ and carry .tcache, and a later call on the same kind of card
# starts with every unchanged kernel compiled and tuned.
#   bash benchmarks/gpu_trainer.sh
#   STAGES="warm check profile blocks" bash benchmarks/gpu_trainer.sh  # correctness, top kernels
#   STAGES="compile grouped" bash benchmarks/gpu_trainer.sh   # torch.compile, the old cuDNN path
set -u
out=${OUT:-benchmarks/out}
mkdir -p "$out"
export PYTHONPATH=. PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=/tmp/triton-cache
mkdir -p "$TRITON_CACHE_DIR"
for cache in .tcache/triton.t*; do
  if [ -f "$cache" ]; then tar xaf "$cache" -C "$TRITON_CACHE_DIR"; fi
done
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
  case " ${STAGES:-warm speed long agree cohort} " in *" $name "*) ;; *) return ;; esac
  echo "== $name ($limit s): $*"
  local start=$SECONDS
  timeout "$limit" python3 benchmarks/gpu_trainer.py "$@" 2>&1 \
    | grep -v "Warning: \|configure_threads()" | tee "$out/$name.txt"
  echo "== $name took $((SECONDS - start)) s"
}

stage warm 110 warm --genes 12 --kernels fused
stage check 60 check
stage speed 150 speed --genes 12 --kernels fused
stage matmul 200 speed --genes 12 --kernels fused matmul
stage agree 70 agree --genes 2
stage profile 30 profile --genes 12 --epochs 4 --rows 16 --lengths 438
stage long 25 profile --genes 12 --epochs 2 --rows 16 --lengths 1075
stage cohort 55 cohort --genes 700 --blocks 2 --block 10
stage compile 240 variants --genes 24 --epochs 8 --variants matmul compiled
stage grouped 60 variants --genes 24 --epochs 8 --variants grouped
stage blocks 90 variants --genes 24 --epochs 8 --variants fused fused-fixed
tar cJf "$out/triton.txz" -C "$TRITON_CACHE_DIR" . || tar czf "$out/triton.tgz" -C "$TRITON_CACHE_DIR" .
ls -l "$out"/triton.t*
