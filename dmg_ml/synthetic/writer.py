"""A deterministic simulator that writes a synthetic TCGA hub in the UCSC Xena file formats.

The output directory mirrors the hub's download paths, so a downloader can use it as a base URL::

    TCGA.<COHORT>.sampleMap/HumanMethylation450.gz   probes x samples, beta values, ``NA`` missing
    TCGA.<COHORT>.sampleMap/HiSeqV2.gz               genes x samples, log2(RSEM + 1)
    probeMap/illuminaMethyl450_hg19_GPL16304_TCGAlegacy
    ground_truth/<COHORT>/genes.tsv                  per-gene truth (signal variance, expected R²)
    ground_truth/<COHORT>/drivers.tsv                the CpGs that drive each gene, with weights
    ground_truth/<COHORT>/signal.tsv.gz              noise-free methylation-driven expression part

What all cohorts share (the spec and its presets, probe placement, genes and drivers) is built in
:mod:`dmg_ml.synthetic.layout`; this module writes it out, one cohort at a time, and re-exports
``SyntheticSpec``, ``SMALL``, ``FULL``, ``PRESETS`` and ``window_lengths``.

Matrices are gzip TSVs whose first header cell is ``sample``; values carry 4 decimals. Matrix rows
come in probe-id order (as on Xena), not by position. The probe map (plain TSV, header
``#id gene chrom chromStart chromEnd strand``, hg19, ``chromEnd = chromStart + 1``) lists every
probe of the matrices. ``gene`` is the symbol of the promoter a probe was placed around, ``.`` for
open-sea probes. Two kinds of probe are unusable by design, as on the real array: probes on chrY
(a valid coordinate outside ``CHROMOSOMES``) and probes without coordinates, written as
``cg........\t.\t.\t-1\t-1\t.`` (chrom ``.``, chromStart and chromEnd ``-1``, strand ``.``).

Biology: a cohort's M-values are
``mu + loading · block factor + cohort block offset + tumour shifts + probe noise``: neighbouring
CpGs share a per-sample block factor (a gene's promoter, or a 500 kb bin), tumours lose open-sea
methylation and gain it at some promoters (CIMP-like), and a normal shares part of its block
factors with its patient's tumour. Expression is
``baseline + cohort effect + tissue effect + Σ w_j · z(M_j) + noise`` where ``z`` standardises the
true M-value of driver CpG ``j`` over the cohort's samples; ``signal = Σ w_j · z(M_j)`` is the
ground truth and ``expected_r2 = var(signal) / (var(signal) + var(tissue effect) + noise_sd²)``.

``genes.tsv`` has one row per HiSeqV2 row: ``gene, chromosome, tss, strand, category``
(modelled, low_expressed or unmapped; unmapped rows have chromosome ``.`` and tss ``-1``),
``has_signal``, ``baseline`` (cohort mean, cohort effect included), ``cohort_effect``,
``tissue_effect`` (normal minus tumour), ``signal_variance``, ``noise_sd``, ``expected_r2``.
``drivers.tsv`` has ``gene, probe_id, chromosome, position, weight, distance_to_tss, kind``
(promoter or distal); ``weight`` multiplies the driver's standardised M-value.
``signal.tsv.gz`` has the rows and columns of HiSeqV2.

Same ``seed`` → byte-identical files; a cohort's files do not depend on which other cohorts are
written. The FULL preset streams probes in chunks, so no probe × sample matrix is held in memory.
It stays one module (just over 400 lines): a cohort's samples, methylation and expression are
drawn in order from that cohort's one random stream (the encoder is ``dmg_ml.synthetic.tsv``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dmg_ml.data.xena import (
    DEFAULT_COHORTS,
    GROUND_TRUTH_PATH,
    PROBE_MAP_PATH,
    expression_path,
    methylation_path,
)
from dmg_ml.synthetic.layout import (
    CHROMS,
    CHRY,
    FULL,  # noqa: F401 - re-exported
    PRESETS,
    PROMOTER,
    SHORE,
    SMALL,
    Layout,
    SyntheticSpec,
    build_layout,
    window_lengths,  # noqa: F401 - re-exported
)
from dmg_ml.synthetic.tsv import BETA_TABLE, NA_CODE, GzipWriter, encode_rows, write_matrix

_PAIR_CORRELATION = np.float32(0.5)

# Tissue source site codes seen in each cohort's real barcodes.
_TSS_CODES: dict[str, tuple[str, ...]] = {
    "BRCA": ("A1", "A2", "A7", "A8", "AC", "AN", "AO", "AQ", "AR", "B6", "BH", "C8", "D8", "E2",
             "E9", "EW", "GM", "LL", "OL", "S3"),
    "COAD": ("A6", "AA", "AD", "AU", "AY", "AZ", "CA", "CK", "CM", "D5", "DM", "F4", "G4", "NH",
             "QG", "RU", "SS", "T9", "WS"),
    "GBM": ("02", "06", "08", "12", "14", "15", "16", "19", "26", "27", "28", "32", "41", "76",
            "81", "87"),
    "LUAD": ("05", "35", "38", "44", "49", "50", "55", "64", "67", "69", "71", "73", "75", "78",
             "80", "86", "91", "93", "95", "97", "99", "J2", "L4", "L9", "MN", "MP", "NJ"),
}
_ALPHABET = np.array(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"))


def _write_probe_map(path: Path, layout: Layout) -> None:
    order = layout.id_order
    placed = layout.chrom[order] >= 0
    gene_names = layout.promoters["gene"].to_numpy()
    gene = layout.gene[order]
    strand = layout.promoters["strand"].to_numpy()
    chrom_names = np.array(CHROMS + (".",), dtype=object)
    table = pd.DataFrame(
        {
            "#id": [f"cg{i:08d}" for i in layout.probe_ids[order]],
            "gene": np.where(gene >= 0, gene_names[np.maximum(gene, 0)], "."),
            "chrom": chrom_names[np.where(placed, layout.chrom[order], len(CHROMS))],
            "chromStart": np.where(placed, layout.pos[order], -1),
            "chromEnd": np.where(placed, layout.pos[order] + 1, -1),
            "strand": np.where(gene >= 0, strand[np.maximum(gene, 0)], "."),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    table.to_csv(tmp, sep="\t", index=False, lineterminator="\n")
    os.replace(tmp, path)


@dataclass
class _Samples:
    barcodes: np.ndarray  # union of both matrices, object
    is_normal: np.ndarray
    paired_tumour: np.ndarray  # for normals: union index of the patient's tumour, else -1
    methylation_columns: np.ndarray  # union indices in the methylation file's column order
    expression_columns: np.ndarray


def _cohort_samples(spec: SyntheticSpec, cohort: str, rng: np.random.Generator) -> _Samples:
    n_tumour, n_normal = spec.sample_counts(cohort)
    if n_normal > n_tumour:
        raise ValueError(f"{cohort}: more normals than tumour patients")
    n_mo, n_eo = spec.n_methylation_only, spec.n_expression_only
    n_patients = n_tumour + n_mo + n_eo
    sites = _TSS_CODES.get(cohort)
    if sites is None:
        sites = tuple("".join(rng.choice(_ALPHABET, 2)) for _ in range(12))
    codes = rng.choice(36**4, size=n_patients, replace=False)
    patients = []
    for number, site in zip(codes, rng.choice(len(sites), n_patients), strict=True):
        digits = "".join(_ALPHABET[(int(number) // 36**k) % 36] for k in (3, 2, 1, 0))
        patients.append(f"TCGA-{sites[site]}-{digits}")
    normal_of = np.sort(rng.choice(n_tumour, size=n_normal, replace=False))
    barcodes = np.array([p + "-01" for p in patients] + [patients[i] + "-11" for i in normal_of],
                        dtype=object)
    n_union = len(barcodes)
    shared = np.concatenate([np.arange(n_tumour), np.arange(n_patients, n_union)])
    methylation = np.concatenate([shared, np.arange(n_tumour, n_tumour + n_mo)])
    expression = np.concatenate([shared, np.arange(n_tumour + n_mo, n_patients)])
    return _Samples(
        barcodes=barcodes,
        is_normal=np.arange(n_union) >= n_patients,
        paired_tumour=np.concatenate([np.full(n_patients, -1), normal_of]),
        methylation_columns=rng.permutation(methylation),
        expression_columns=rng.permutation(expression),
    )


def _cohort_key(cohort: str) -> int:
    return zlib.crc32(cohort.encode())


def _write_cohort(out_dir: Path, layout: Layout, spec: SyntheticSpec, cohort: str,
                  seed: int) -> dict[str, int]:
    key = _cohort_key(cohort)
    rng = np.random.default_rng([seed, 1, key])
    samples = _cohort_samples(spec, cohort, rng)
    n_union = len(samples.barcodes)
    normal = samples.is_normal

    # Per-sample factors: open-sea hypomethylation and CIMP-like promoter gain in tumours.
    hypo_scale = rng.uniform(1.0, 2.0)
    hypo_level = np.where(normal, 0.0, rng.beta(2.0, 3.0, n_union) * hypo_scale).astype(np.float32)
    cimp = np.where(normal, 0.0, rng.beta(0.6, 2.0, n_union)).astype(np.float32)
    sample_shift = rng.normal(0.0, 0.1, n_union).astype(np.float32)

    n_blocks = len(layout.block_is_promoter)
    factors = rng.standard_normal((n_blocks, n_union), dtype=np.float32)
    normals = np.flatnonzero(normal)
    factors[:, normals] = (_PAIR_CORRELATION * factors[:, samples.paired_tumour[normals]]
                           + np.sqrt(1 - _PAIR_CORRELATION**2) * factors[:, normals])
    block_offset = rng.normal(0.0, 0.3, n_blocks).astype(np.float32)
    keep = rng.random(n_blocks) < 0.7
    extra = layout.block_is_promoter & (rng.random(n_blocks) < 0.03)
    gamma = np.where(keep, layout.hyper_gamma, 0.0)
    gamma = np.where(extra & (gamma == 0), rng.uniform(1.0, 3.0, n_blocks), gamma)
    gamma = gamma.astype(np.float32)
    hyper_probe = np.isin(layout.klass, (PROMOTER, SHORE))

    drivers = layout.drivers
    weights = drivers["base_weight"].to_numpy() * np.exp(rng.normal(0.0, 0.25, len(drivers)))
    genes = layout.genes
    n_genes = len(genes)
    raw_signal = np.zeros((n_genes, n_union))
    rank = np.empty(layout.n_probes, np.int64)
    rank[layout.id_order] = np.arange(layout.n_probes)
    driver_rank = rank[drivers["probe"].to_numpy()]
    driver_gene = drivers["gene_row"].to_numpy()

    id_names = np.array([f"cg{i:08d}" for i in layout.probe_ids[layout.id_order]], dtype="S10")
    meth_cols = samples.methylation_columns
    path = out_dir / methylation_path(cohort)
    with GzipWriter(path, spec.compresslevel) as out:
        out.write(("sample\t" + "\t".join(samples.barcodes[meth_cols]) + "\n").encode())
        for chunk, start in enumerate(range(0, layout.n_probes, spec.chunk_size)):
            crng = np.random.default_rng([seed, 2, key, chunk])
            idx = layout.id_order[start:start + spec.chunk_size]
            block = layout.block[idx]
            m = factors[block]
            m *= layout.loading[idx, None]
            m += (layout.mu[idx] + block_offset[block])[:, None]
            m += sample_shift[None, :]
            m -= layout.hypo[idx, None] * hypo_level[None, :]
            hyper = np.flatnonzero(hyper_probe[idx] & (gamma[block] > 0))
            m[hyper] += gamma[block[hyper], None] * cimp[None, :]
            noise = crng.standard_normal(m.shape, dtype=np.float32)
            noise *= layout.noise_sd[idx, None]
            m += noise

            in_chunk = np.flatnonzero((driver_rank >= start) & (driver_rank < start + len(idx)))
            if len(in_chunk):
                values = m[driver_rank[in_chunk] - start].astype(np.float64)
                z = (values - values.mean(axis=1, keepdims=True)) / values.std(axis=1,
                                                                               keepdims=True)
                np.add.at(raw_signal, driver_gene[in_chunk], weights[in_chunk, None] * z)

            observed = m[:, meth_cols]
            np.negative(observed, out=observed)
            np.exp2(observed, out=observed)
            observed += 1.0
            np.divide(10_000.0, observed, out=observed)
            codes = np.rint(observed).astype(np.uint16)
            missing = crng.random(codes.shape, dtype=np.float32) < layout.missing_rate[idx, None]
            codes[missing] = NA_CODE
            out.write(encode_rows(id_names[start:start + len(idx)], codes, BETA_TABLE))

    return _write_expression(out_dir, layout, spec, cohort, seed, samples, raw_signal, weights)


def _write_expression(out_dir: Path, layout: Layout, spec: SyntheticSpec, cohort: str,
                      seed: int, samples: _Samples, raw_signal: np.ndarray,
                      weights: np.ndarray) -> dict[str, int]:
    rng = np.random.default_rng([seed, 3, _cohort_key(cohort)])
    genes = layout.genes
    n_genes = len(genes)
    cols = samples.expression_columns
    normal = samples.is_normal[cols].astype(float)
    p_normal = normal.mean()

    raw = raw_signal[:, cols]
    raw_var = raw.var(axis=1)
    target_r2 = np.clip(genes["target_r2"].to_numpy() + rng.normal(0, 0.05, n_genes), 0.15, 0.85)
    has_signal = genes["has_signal"].to_numpy() & (raw_var > 0)
    total_var = genes["total_sd"].to_numpy() ** 2
    signal_var = np.where(has_signal, target_r2 * total_var, 0.0)
    scale = np.where(has_signal, np.sqrt(signal_var / np.where(raw_var > 0, raw_var, 1.0)), 0.0)
    signal = raw * scale[:, None]
    other_var = np.where(has_signal, signal_var * (1 - target_r2) / target_r2, total_var)
    tissue_var = genes["tissue_fraction"].to_numpy() * other_var
    if 0 < p_normal < 1:
        tissue_effect = np.minimum(np.sqrt(tissue_var / (p_normal * (1 - p_normal))), 3.0)
    else:
        tissue_effect = np.zeros(n_genes)
    tissue_effect *= genes["tissue_sign"].to_numpy()
    tissue_var = tissue_effect**2 * p_normal * (1 - p_normal)
    noise_sd = np.sqrt(np.maximum(other_var - tissue_var, 0.0))
    expressed = (genes["category"] != "low_expressed").to_numpy()
    cohort_effect = rng.normal(0.0, 0.5, n_genes) * expressed

    # Noise: a normal shares half its noise variance with its patient's tumour.
    union_noise = rng.standard_normal((n_genes, len(samples.barcodes)))
    normals = np.flatnonzero(samples.is_normal)
    union_noise[:, normals] = (0.5 * union_noise[:, samples.paired_tumour[normals]]
                               + np.sqrt(0.75) * union_noise[:, normals])
    noise = union_noise[:, cols] * noise_sd[:, None]
    expression = (genes["baseline"].to_numpy() + cohort_effect)[:, None]
    expression = expression + tissue_effect[:, None] * (normal - p_normal)[None, :] + signal + noise
    zero = rng.random(expression.shape) < genes["zero_fraction"].to_numpy()[:, None]
    expression = np.where(zero, 0.0, np.maximum(expression, 0.0))

    barcodes = samples.barcodes[cols]
    names = genes["gene"].tolist()
    write_matrix(out_dir / expression_path(cohort), barcodes, names, expression,
                  spec.compresslevel)
    truth = (out_dir / GROUND_TRUTH_PATH.format(cohort=cohort)).parent
    write_matrix(truth / "signal.tsv.gz", barcodes, names, signal, spec.compresslevel)

    signal_var_written = signal.var(axis=1)
    explained = signal_var_written + tissue_var + noise_sd**2
    table = pd.DataFrame(
        {
            "gene": genes["gene"],
            "chromosome": genes["chromosome"],
            "tss": genes["tss"],
            "strand": genes["strand"],
            "category": genes["category"],
            "has_signal": has_signal,
            "baseline": genes["baseline"] + cohort_effect,
            "cohort_effect": cohort_effect,
            "tissue_effect": tissue_effect,
            "signal_variance": signal_var_written,
            "noise_sd": noise_sd,
            "expected_r2": np.where(explained > 0, signal_var_written / explained, 0.0),
        }
    )
    truth.mkdir(parents=True, exist_ok=True)
    table.to_csv(truth / "genes.tsv", sep="\t", index=False, float_format="%.6g",
                 lineterminator="\n")

    drivers = layout.drivers
    probes = drivers["probe"].to_numpy()
    gene_rows = drivers["gene_row"].to_numpy()
    driver_table = pd.DataFrame(
        {
            "gene": genes["gene"].to_numpy()[gene_rows],
            "probe_id": [f"cg{i:08d}" for i in layout.probe_ids[probes]],
            "chromosome": np.array(CHROMS, dtype=object)[layout.chrom[probes]],
            "position": layout.pos[probes],
            "weight": weights * scale[gene_rows],
            "distance_to_tss": drivers["distance_to_tss"],
            "kind": drivers["kind"],
        }
    ).sort_values(["gene", "distance_to_tss"], kind="stable")
    driver_table.to_csv(truth / "drivers.tsv", sep="\t", index=False, float_format="%.6g",
                        lineterminator="\n")

    n_tumour, n_normal = spec.sample_counts(cohort)
    return {
        "tumour": n_tumour,
        "normal": n_normal,
        "methylation_samples": len(samples.methylation_columns),
        "expression_samples": len(cols),
        "shared_samples": n_tumour + n_normal,
        "probes": layout.n_probes,
        "expression_rows": n_genes,
        "signal_genes": int(has_signal.sum()),
        "drivers": len(drivers),
    }



#: The file a synthetic hub records its spec and seed in.
MANIFEST = "synthetic_hub.json"


def write_synthetic_hub(out_dir: str | os.PathLike[str], spec: SyntheticSpec = SMALL,
                        cohorts: Sequence[str] = DEFAULT_COHORTS, seed: int = 0) -> dict:
    """Write a synthetic Xena hub under ``out_dir`` and return counts per cohort.

    Deterministic: the same ``spec`` and ``seed`` give byte-identical files, and a cohort's files
    are the same whichever other cohorts are written alongside.
    """
    if seed < 0:
        raise ValueError("seed must be non-negative")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    layout = build_layout(spec, seed)
    _write_probe_map(out / PROBE_MAP_PATH, layout)
    category = layout.genes["category"]
    summary: dict = {
        "out_dir": str(out),
        "seed": seed,
        "probes": layout.n_probes,
        "probes_on_chromosomes": int(((layout.chrom >= 0) & (layout.chrom < CHRY)).sum()),
        "modelled_genes": int((category == "modelled").sum()),
        "low_expressed_genes": int((category == "low_expressed").sum()),
        "unmapped_genes": int((category == "unmapped").sum()),
        "cohorts": {},
    }
    for cohort in cohorts:
        summary["cohorts"][cohort] = _write_cohort(out, layout, spec, cohort, seed)
    (out / MANIFEST).write_text(json.dumps(hub_manifest(spec, seed), sort_keys=True))
    return summary


def hub_manifest(spec: SyntheticSpec, seed: int) -> dict:
    """What a hub was written from: more cohorts may be added only with the same spec and seed
    (they share the probe map and the layout)."""
    return {"seed": seed, "spec": json.loads(json.dumps(asdict(spec)))}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dmg_ml.synthetic.writer",
        description="Write a deterministic synthetic TCGA hub in the UCSC Xena file formats.",
    )
    parser.add_argument("out_dir", help="directory to write the hub into")
    parser.add_argument("--size", choices=sorted(PRESETS), default="small")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cohorts", nargs="+", default=list(DEFAULT_COHORTS))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    summary = write_synthetic_hub(args.out_dir, PRESETS[args.size], args.cohorts, args.seed)
    print(f"wrote {args.size} synthetic hub to {summary['out_dir']} (seed {args.seed}): "
          f"{summary['probes']} probes, {summary['modelled_genes']} modelled genes")
    for cohort, counts in summary["cohorts"].items():
        print(f"  {cohort}: {counts['tumour']} tumour + {counts['normal']} normal shared, "
              f"{counts['methylation_samples']} methylation / {counts['expression_samples']} "
              f"expression samples, {counts['expression_rows']} expression rows, "
              f"{counts['signal_genes']} with methylation signal")
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
