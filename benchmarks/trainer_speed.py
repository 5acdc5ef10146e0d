"""Reference trainer vs fast (batched) trainer: speed and agreement on the same CV work.

Both trainers cross-validate the same genes under the honest protocol, as the evaluation asset
does (``dmg_ml.evaluation.engine.evaluate`` of model ``cnn``; same data, same folds, same seeds).
The genes' input lengths L are, by default, the evenly spaced quantiles of the window
lengths of the synthetic 450K-density cohort (``dmg_ml.synthetic.writer.FULL``) at ``--window-bp``
(default 1 Mb, the project's default window: median L ≈ 440); ``--lengths range`` draws them
log-uniformly from ``[--min-cpgs, --max-cpgs]`` instead. ``fixed`` mode sets ``patience`` above
``max_epochs`` so every fold runs exactly ``--epochs`` epochs; ``early`` mode uses real early
stopping (``--max-epochs``, ``--patience``), long enough for R² to mean something (the
expression offset alone takes ~100 epochs to learn). The trainers alternate gene by gene (and
which goes first) so that both see the same machine load; on a shared machine, run it when
nothing else is (2-thread OpenMP slows down badly when a core is taken).

Both trainers run in the same process, by default with freed memory kept for reuse
(``dmg_ml.runtime.keep_freed_memory``, as the evaluation asset runs); ``--allocator default``
leaves glibc's malloc as it is, which slows both, the reference most.

Prints gene-fold-epochs per second for both, their ratio, and the mean |ΔR²| between the pooled
out-of-fold R² per gene. Needs only torch, numpy, pandas and scikit-learn::

    PYTHONPATH=. python benchmarks/trainer_speed.py --genes 6 --epochs 20
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dmg_ml  # noqa: E402, F401, I001  (before torch: OpenMP threads then sleep, not spin)
import torch  # noqa: E402
from dmg_ml.data.inputs import GeneData  # noqa: E402
from dmg_ml.data.windows import DEFAULT_WINDOW_BP  # noqa: E402
from dmg_ml.data.splits import HONEST, N_FOLDS  # noqa: E402
from dmg_ml.training.estimators import cnn_params  # noqa: E402
from dmg_ml.evaluation.engine import ModelCVResult, evaluate  # noqa: E402
from dmg_ml.runtime import keep_freed_memory  # noqa: E402
from dmg_ml.synthetic.writer import FULL, window_lengths  # noqa: E402
from dmg_ml.training.reference import TrainConfig  # noqa: E402


def cross_validate_cnn(
    genes: list[GeneData],
    config: TrainConfig,
    trainer: str = "batched",
    device: str | torch.device = "cpu",
    n_folds: int = N_FOLDS,
    protocol: str = HONEST,
    on_gene_done=None,
) -> list[ModelCVResult]:
    """The CNN cross-validated on ``genes`` as the evaluation asset does it
    (``dmg_ml.evaluation.engine.evaluate``: the shared outer folds, every fold of a batch of
    genes stacked by the batched trainer), seeded with ``config.seed``."""
    return evaluate(genes, "cnn", protocol=protocol, params=cnn_params(config, trainer, device),
                    n_folds=n_folds, seed=config.seed, on_gene_done=on_gene_done)


def epochs_run(result: ModelCVResult) -> int:
    """Epochs the CNN ran over the gene's folds (``ModelCVResult.training``)."""
    return int(result.training["epochs_run"].sum())


def simulate_gene(
    rng: np.random.Generator, name: str, samples: np.ndarray, normal: np.ndarray, length: int
) -> GeneData:
    """One gene: bimodal, spatially correlated M-values and an expression that depends on a few
    CpGs near the window centre (mostly negatively) and a few distal ones, plus noise."""
    n = len(samples)
    base = np.where(
        rng.random(length) < 0.5, rng.normal(2.5, 0.7, length), rng.normal(-3.0, 0.7, length)
    )
    latent = rng.standard_normal((n, length))
    smooth = np.empty_like(latent)
    smooth[:, 0] = latent[:, 0]
    for j in range(1, length):  # AR(1) along the genome: neighbours are correlated
        smooth[:, j] = 0.7 * smooth[:, j - 1] + np.sqrt(1 - 0.7**2) * latent[:, j]
    tumour_shift = rng.normal(0, 0.8, length) * (rng.random(length) < 0.2)
    x = base + 0.9 * smooth + np.outer(~normal, tumour_shift)
    centre = length // 2
    near = rng.choice(
        np.arange(max(0, centre - 5), min(length, centre + 5)), size=min(4, length), replace=False
    )
    far = rng.choice(length, size=min(3, length), replace=False)
    signal = -x[:, near].mean(axis=1) + 0.5 * np.tanh(x[:, far]).mean(axis=1)
    signal = (signal - signal.mean()) / (signal.std() + 1e-9)
    heritability = rng.uniform(0.3, 0.8)
    y = np.sqrt(heritability) * signal + np.sqrt(1 - heritability) * rng.standard_normal(n)
    patients = np.array([s[:12] for s in samples])
    return GeneData(name, x.astype(np.float32), 8 + 2 * y, patients, samples)


def simulate_cohort(n_samples: int, lengths: list[int], seed: int) -> list[GeneData]:
    """TCGA-like barcodes (about 10 % normals paired with a tumour of the same patient) and one
    gene per window length."""
    rng = np.random.default_rng(seed)
    n_normal = n_samples // 10
    n_patients = n_samples - n_normal
    patients = [f"TCGA-SY-{i:04d}" for i in range(n_patients)]
    samples = [f"{p}-01A" for p in patients] + [f"{p}-11A" for p in patients[:n_normal]]
    normal = np.array([s.endswith("-11A") for s in samples])
    return [
        simulate_gene(rng, f"GENE{g}", np.array(samples), normal, int(length))
        for g, length in enumerate(lengths)
    ]


def synthetic_lengths(n_genes: int, window_bp: int) -> list[int]:
    """Window lengths at the quantiles (2i+1)/2n of the synthetic 450K-density cohort's."""
    lengths = window_lengths(FULL, window_bp).to_numpy()
    quantiles = (2 * np.arange(n_genes) + 1) / (2 * n_genes)
    return [max(1, int(round(x))) for x in np.quantile(lengths, quantiles)]


def range_lengths(n_genes: int, min_cpgs: int, max_cpgs: int, seed: int) -> list[int]:
    """Log-uniform window lengths in ``[min_cpgs, max_cpgs]``."""
    rng = np.random.default_rng(seed)
    draws = np.exp(rng.uniform(np.log(min_cpgs), np.log(max_cpgs), n_genes))
    return [int(x) for x in draws.round()]


@dataclass
class Tally:
    seconds: float = 0.0
    gene_fold_epochs: int = 0

    def add(self, result: ModelCVResult, seconds: float) -> None:
        self.seconds += seconds
        self.gene_fold_epochs += epochs_run(result)

    @property
    def rate(self) -> float:
        return self.gene_fold_epochs / self.seconds


def run_mode(
    genes: list[GeneData],
    config: TrainConfig,
    reference_config: TrainConfig,
    device: str,
    label: str,
    verbose: bool = False,
) -> None:
    """Cross-validate every gene with both trainers, alternating, and print the comparison."""
    tallies = {"reference": Tally(), "batched": Tally()}
    r2: dict[str, list[float]] = {"reference": [], "batched": []}
    seconds: dict[str, list[float]] = {"reference": [], "batched": []}
    configs = {"reference": reference_config, "batched": config}
    for i, gene in enumerate(genes):
        order = ["reference", "batched"] if i % 2 == 0 else ["batched", "reference"]
        for trainer in order:
            start = time.perf_counter()
            (result,) = cross_validate_cnn(
                [gene], configs[trainer], trainer=trainer, device=device
            )
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - start
            tallies[trainer].add(result, elapsed)
            r2[trainer].append(result.r2)
            seconds[trainer].append(elapsed)
        if verbose:
            ref_s, fast_s = seconds["reference"][-1], seconds["batched"][-1]
            print(
                f"  {gene.gene} L={gene.X.shape[1]}: reference {ref_s:.2f} s, fast {fast_s:.2f} s "
                f"({ref_s / fast_s:.1f}x), R2 {r2['reference'][-1]:.4f} vs {r2['batched'][-1]:.4f}",
                flush=True,
            )
    ref, fast = tallies["reference"], tallies["batched"]
    delta = np.abs(np.array(r2["batched"]) - np.array(r2["reference"]))
    print(f"\n== {label}: max_epochs={config.max_epochs} patience={config.patience}")
    print(
        f"reference ({reference_config.precision}): {ref.gene_fold_epochs} gene-fold-epochs "
        f"in {ref.seconds:.1f} s = {ref.rate:.1f} gene-fold-epochs/s"
    )
    print(
        f"fast      ({config.precision}): {fast.gene_fold_epochs} gene-fold-epochs "
        f"in {fast.seconds:.1f} s = {fast.rate:.1f} gene-fold-epochs/s"
    )
    print(f"speed-up (fast/reference, per gene-fold-epoch): {fast.rate / ref.rate:.2f}x")
    print(f"mean |dR2| (pooled honest R2 per gene): {delta.mean():.4f} (max {delta.max():.4f})")
    if config.patience > config.max_epochs:
        print(
            f"  (after {config.max_epochs} fixed epochs R2 compares training trajectories, not "
            "converged models; --mode early checks the 0.01 budget)"
        )
    print(f"mean R2 reference {np.mean(r2['reference']):.4f}, fast {np.mean(r2['batched']):.4f}")


def run_together(
    genes: list[GeneData],
    config: TrainConfig,
    reference_config: TrainConfig,
    device: str,
    label: str,
    reference_genes: int,
) -> None:
    """The fast trainer on every gene in one call (on CUDA, genes of one length share a stacked
    model), the reference loop on the first ``reference_genes`` genes; rates per gene-fold-epoch
    are comparable even though the reference trains fewer genes."""
    tallies = {"reference": Tally(), "batched": Tally()}
    start = time.perf_counter()
    fast = cross_validate_cnn(genes, config, trainer="batched", device=device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    for result in fast:
        tallies["batched"].add(result, elapsed / len(fast))
    reference = []
    for gene in genes[:reference_genes]:
        start = time.perf_counter()
        (result,) = cross_validate_cnn([gene], reference_config, trainer="reference",
                                       device=device)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        tallies["reference"].add(result, time.perf_counter() - start)
        reference.append(result)
    ref, fst = tallies["reference"], tallies["batched"]
    print(f"\n== {label}, all {len(genes)} genes in one call: max_epochs={config.max_epochs} "
          f"patience={config.patience}")
    print(f"reference ({reference_config.precision}, first {len(reference)} genes): "
          f"{ref.gene_fold_epochs} gene-fold-epochs in {ref.seconds:.1f} s = {ref.rate:.1f}/s")
    print(f"fast      ({config.precision}): {fst.gene_fold_epochs} gene-fold-epochs in "
          f"{fst.seconds:.1f} s = {fst.rate:.1f}/s")
    print(f"speed-up (fast/reference, per gene-fold-epoch): {fst.rate / ref.rate:.2f}x")
    delta = np.abs(np.array([r.r2 for r in fast[: len(reference)]])
                   - np.array([r.r2 for r in reference]))
    print(f"mean |dR2| on the genes both trained: {delta.mean():.4f} (max {delta.max():.4f})")
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**30
        print(f"peak GPU memory allocated: {peak:.1f} GiB")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--genes", type=int, default=6)
    p.add_argument("--lengths", default="synthetic", choices=["synthetic", "range"])
    p.add_argument(
        "--window-bp", type=int, default=DEFAULT_WINDOW_BP, help="for --lengths synthetic"
    )
    p.add_argument("--epochs", type=int, default=20, help="epochs per fold in fixed mode")
    p.add_argument("--max-epochs", type=int, default=300, help="epoch cap in early mode")
    p.add_argument("--patience", type=int, default=30, help="patience in early mode")
    p.add_argument("--samples", type=int, default=600, help="cohort size (~120-873 in TCGA)")
    p.add_argument("--min-cpgs", type=int, default=30, help="for --lengths range")
    p.add_argument("--max-cpgs", type=int, default=400, help="for --lengths range")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    p.add_argument("--reference-precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--mode", default="fixed", choices=["fixed", "early", "both"])
    p.add_argument("--allocator", default="kept", choices=["kept", "default"])
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", action="store_true", help="one line per gene")
    p.add_argument(
        "--copies", type=int, default=1,
        help="genes simulated per window length (genes of one length can train together)",
    )
    p.add_argument(
        "--together", action="store_true",
        help="fast trainer on all genes in one call; reference on --reference-genes of them",
    )
    p.add_argument("--reference-genes", type=int, default=2, help="with --together")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    kept = args.allocator == "kept" and keep_freed_memory()
    if args.lengths == "synthetic":
        lengths = synthetic_lengths(args.genes, args.window_bp)
    else:
        lengths = range_lengths(args.genes, args.min_cpgs, args.max_cpgs, args.seed)
    lengths = [length for length in lengths for _ in range(args.copies)]
    genes = simulate_cohort(args.samples, lengths, args.seed)
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor()
    print(
        f"torch {torch.__version__}, device {args.device} ({device_name or platform.machine()}),"
        f" threads {torch.get_num_threads()}, fast precision {args.precision}, reference "
        f"precision {args.reference_precision}, freed memory kept for reuse: {kept}"
    )
    source = (
        f"quantiles of the synthetic 450K cohort at W={args.window_bp:,} bp"
        if args.lengths == "synthetic"
        else f"log-uniform in [{args.min_cpgs}, {args.max_cpgs}]"
    )
    print(f"{len(genes)} genes, {args.samples} samples, lengths {sorted(set(lengths))} "
          f"x{args.copies} ({source})")
    warm = simulate_cohort(60, [20], args.seed + 1)
    for trainer in ("reference", "batched"):
        cross_validate_cnn(warm, TrainConfig(max_epochs=2), trainer=trainer, device=args.device)
    modes = ["fixed", "early"] if args.mode == "both" else [args.mode]
    for mode in modes:
        epochs = args.epochs if mode == "fixed" else args.max_epochs
        patience = epochs + 1 if mode == "fixed" else args.patience
        config = TrainConfig(
            max_epochs=epochs, patience=patience, seed=args.seed, precision=args.precision
        )
        reference = replace(config, precision=args.reference_precision)
        if args.together:
            run_together(genes, config, reference, args.device, mode, args.reference_genes)
        else:
            run_mode(genes, config, reference, args.device, mode, args.verbose)


if __name__ == "__main__":
    main()
