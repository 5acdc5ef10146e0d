#!/usr/bin/env bash
# The CNN's training through the evaluation asset end to end on a CUDA machine
# (benchmarks/gpu_asset.py): full-size synthetic BRCA hub, its data layer through Dagster,
# model_evaluation of the CNN alone on one chromosome for ~BUDGET_S seconds of training, genes
# per hour. Runs from the source tree with the machine's own PyTorch; what
# the machine lacks (Dagster, DuckDB, pandera, ...) comes as cp312 wheels in .whl/ (ignored by
# git, carried to the machine: 36 MiB), installed into /tmp/site unless the device command
# already did. Fetch them where pip works:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     -r benchmarks/gpu_wheels.txt
# Logs and the JSON report go to $OUT (the device tool's folder) or benchmarks/out/. Extra
# arguments go to gpu_asset.py:
#   bash benchmarks/gpu_asset.sh                      # chr20, rounds from 24 genes, ~200 s
#   LIMIT_S=300 bash benchmarks/gpu_asset.sh --chromosome chr21 --genes 0
set -u
out=${OUT:-benchmarks/out}
mkdir -p "$out"
if ! PYTHONPATH=/tmp/site python3 -c "import dagster" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 \
  | tee "$out/gpu_asset_env.txt"
python3 -c "import sys, torch, numpy, pandas, pyarrow, sklearn, dagster, duckdb, pandera
print('python', sys.version.split()[0], 'torch', torch.__version__, 'numpy', numpy.__version__,
      'pandas', pandas.__version__, 'pyarrow', pyarrow.__version__, 'sklearn',
      sklearn.__version__, 'dagster', dagster.__version__, 'duckdb', duckdb.__version__,
      'pandera', pandera.__version__)" 2>&1 | tee -a "$out/gpu_asset_env.txt"
start=$SECONDS
timeout -k 30 "${LIMIT_S:-420}" python3 benchmarks/gpu_asset.py --budget-s "${BUDGET_S:-200}" \
  --report "$out/gpu_asset.json" "$@" 2>&1 \
  | grep -v " - DEBUG - \|Warning: \|warnings.warn(" | tee "$out/gpu_asset.txt"
status=${PIPESTATUS[0]}
echo "== gpu_asset.py exit $status after $((SECONDS - start)) s"
grep "^PHASE\|^GENES PER HOUR\|^training round" "$out/gpu_asset.txt"
exit "$status"
