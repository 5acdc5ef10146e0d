"""hg19 reference facts: chromosomes, their lengths and the gene promoter table the study used."""

from __future__ import annotations

from importlib.resources import files

import pandas as pd

#: Chromosomes that carry training partitions. chrY and chrM are left out: the 450K array has almost
#: no chrY probes and female-dominated cohorts (BRCA) leave them empty.
CHROMOSOMES: tuple[str, ...] = tuple(f"chr{i}" for i in range(1, 23)) + ("chrX",)

#: hg19 (GRCh37) chromosome lengths in bp.
HG19_LENGTHS: dict[str, int] = {
    "chr1": 249_250_621, "chr2": 243_199_373, "chr3": 198_022_430, "chr4": 191_154_276,
    "chr5": 180_915_260, "chr6": 171_115_067, "chr7": 159_138_663, "chr8": 146_364_022,
    "chr9": 141_213_431, "chr10": 135_534_747, "chr11": 135_006_516, "chr12": 133_851_895,
    "chr13": 115_169_878, "chr14": 107_349_540, "chr15": 102_531_392, "chr16": 90_354_753,
    "chr17": 81_195_210, "chr18": 78_077_248, "chr19": 59_128_983, "chr20": 63_025_520,
    "chr21": 48_129_895, "chr22": 51_304_566, "chrX": 155_270_560,
}

#: Half-width of a promoter in the geneEXPLORE table (each row is TSS ± 1 kb).
PROMOTER_HALF_WIDTH = 1_000


def load_promoters(path: str | None = None) -> pd.DataFrame:
    """Read the geneEXPLORE hg19 promoter table (shipped as package data unless ``path`` is given).

    Returns one row per gene on ``CHROMOSOMES`` with columns
    ``gene, chromosome, start, end, strand, tss``; ``tss`` is the promoter's centre.
    """
    source = path if path is not None else files("dmg_ml").joinpath("data/hg19_promoter.txt")
    with open(source) as handle:  # type: ignore[arg-type]
        raw = pd.read_csv(handle, sep="\t", dtype={"chrID": str, "gene name": str, "strand": str})
    expected = {"chrID", "start", "end", "gene name", "strand"}
    missing = expected - set(raw.columns)
    if missing:
        raise ValueError(f"promoter table {source} lacks columns {sorted(missing)}")
    table = pd.DataFrame(
        {
            "gene": raw["gene name"].astype(str),
            "chromosome": raw["chrID"].astype(str),
            "start": raw["start"].astype("int64"),
            "end": raw["end"].astype("int64"),
            "strand": raw["strand"].astype(str),
        }
    )
    table = table[table["chromosome"].isin(CHROMOSOMES)].reset_index(drop=True)
    table["tss"] = (table["start"] + table["end"]) // 2
    return table
