"""Bytes per gene in the checkpoint registry, and the total for a full BRCA (docs/design.md §11).

Real checkpoint files are written through ``CheckpointStore`` for genes at the quantiles of the 1 Mb
window's CpG counts (the synthetic full-size 450K cohort's windows, ``window_lengths(FULL)``, or
``--lengths``), in the layouts ``model_evaluation`` writes for the CNN (``checkpoint_models``): the
five fold models alone (the default), those and the final model, or the final model alone, each in
fp32 or fp16 (``half_precision``; ``checkpoint_precision: auto`` picks fp16 per gene where it moves
the out-of-fold R² by less than 1e-3). ``store_min_r2`` scales a total by the share of genes kept.
The file size is linear in the parameter count, so each layout's bytes are fitted as
``a + b·L + c·params(L)`` on the measured files and the fit is summed over every gene's L to
project the registry of a full cohort (``--genes``, 14,000 by default, spread as the windows
are). The fit's largest relative error on the measured files is printed.

    python benchmarks/checkpoint_size.py
    python benchmarks/checkpoint_size.py --lengths 176 291 438 723 1270
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dmg_ml  # noqa: E402,F401  (thread settings before torch)
from dmg_ml.data.windows import DEFAULT_WINDOW_BP  # noqa: E402
from dmg_ml.models.checkpoint import FoldCheckpoint, GeneCheckpoint, half_precision  # noqa: E402
from dmg_ml.models.cnn import parameter_count  # noqa: E402
from dmg_ml.synthetic.layout import FULL, window_lengths  # noqa: E402
from dmg_ml.training.reference import init_model  # noqa: E402
from dmg_resources.checkpoints import CheckpointStore  # noqa: E402

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
LAYOUTS = {  # name: (fold models, final model, half precision)
    "folds_and_final fp32": (5, True, False),
    "folds_and_final fp16": (5, True, True),
    "folds fp32": (5, False, False),
    "folds fp16": (5, False, True),
    "final fp32": (0, True, False),
    "final fp16": (0, True, True),
}


def checkpoint(length: int, n_folds: int, final: bool, half: bool) -> GeneCheckpoint:
    state = init_model(length, "adaptive", 0).state_dict()
    models = []
    for fold in range(n_folds + final):
        entry = FoldCheckpoint(fold, state, np.zeros(length), np.ones(length), length, "adaptive")
        models.append(half_precision(entry) if half else entry)
    probes = [f"cg{i:08d}" for i in range(length)]
    config = json.dumps({"window_bp": DEFAULT_WINDOW_BP, "max_epochs": 700, "patience": 90})
    return GeneCheckpoint("GENE1", "honest", probes, models[:n_folds], config, "0" * 36,
                          models[n_folds] if final else None)


def measure(lengths: list[int], root: Path) -> dict[str, dict[int, int]]:
    store = CheckpointStore(root=str(root))
    sizes: dict[str, dict[int, int]] = {name: {} for name in LAYOUTS}
    for name, (n_folds, final, half) in LAYOUTS.items():
        for length in lengths:
            key, _ = store.save(checkpoint(length, n_folds, final, half), name.replace(" ", "_"),
                                length)
            sizes[name][length] = store.resolve(key).stat().st_size
    return sizes


def fit(sizes: dict[int, int]) -> tuple[np.ndarray, float]:
    lengths = np.array(sorted(sizes))
    design = np.column_stack([np.ones(len(lengths)), lengths,
                              [parameter_count(int(n)) for n in lengths]])
    measured = np.array([sizes[n] for n in lengths], dtype=np.float64)
    coef, *_ = np.linalg.lstsq(design, measured, rcond=None)
    error = float(np.max(np.abs(design @ coef - measured) / measured))
    return coef, error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="*", default=None,
                        help="CpG counts to measure (default: quantiles of the full windows)")
    parser.add_argument("--genes", type=int, default=14_000, help="genes of the projection")
    args = parser.parse_args(argv)

    windows = window_lengths(FULL, DEFAULT_WINDOW_BP).to_numpy()
    windows = windows[windows > 0]
    lengths = args.lengths or [int(np.quantile(windows, q)) for q in QUANTILES]
    sample = np.random.default_rng(0).choice(windows, size=args.genes, replace=True)
    print(f"window CpG counts at W={DEFAULT_WINDOW_BP:,}: {len(windows):,} genes, quantiles "
          f"{dict(zip(QUANTILES, [int(np.quantile(windows, q)) for q in QUANTILES], strict=True))}")
    with tempfile.TemporaryDirectory() as root:
        sizes = measure(lengths, Path(root))
    header = "| layout | " + " | ".join(f"L={n}" for n in lengths)
    print(header + f" | mean per gene | {args.genes:,} genes | fit error |")
    print("|---" * (len(lengths) + 4) + "|")
    params = np.array([parameter_count(int(n)) for n in sample])
    for name, measured in sizes.items():
        coef, error = fit(measured)
        total = float(np.sum(coef[0] + coef[1] * sample + coef[2] * params))
        cells = " | ".join(f"{measured[n] / 1e6:.1f} MB" for n in lengths)
        print(f"| {name} | {cells} | {total / args.genes / 1e6:.1f} MB | "
              f"{total / 1e9:,.0f} GB | {error:.1e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
