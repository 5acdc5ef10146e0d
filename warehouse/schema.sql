-- One view per table. Each table is a tree of Parquet files, one per partition
-- ({root}/<table>/cohort=<COHORT>[/chromosome=<chr>]/part-0.parquet), written by the Dagster assets.
-- Partition keys (cohort, chromosome) come from the directory names.

-- samples: every barcode of a cohort's methylation and expression files.
CREATE OR REPLACE VIEW samples AS
SELECT cohort, sample, patient, sample_type_code, tissue, in_methylation, in_expression, kept
FROM read_parquet('{root}/samples/**/*.parquet', hive_partitioning = true);

-- probes: 450K probes with hg19 coordinates measured in a cohort, with their missing fraction;
-- kept = false when more than 20% of samples miss the probe.
CREATE OR REPLACE VIEW probes AS
SELECT cohort, probe_id, chromosome, position, missing_fraction, kept
FROM read_parquet('{root}/probes/**/*.parquet', hive_partitioning = true);

-- m_values: M = log2(beta / (1 - beta)), clamped to [-10, 10]; imputed = filled by kNN.
CREATE OR REPLACE VIEW m_values AS
SELECT cohort, chromosome, probe_id, sample, m_value, imputed
FROM read_parquet('{root}/m_values/**/*.parquet', hive_partitioning = true);

-- expression: log2(RSEM + 1) of genes with mean > 1, samples present in both matrices.
CREATE OR REPLACE VIEW expression AS
SELECT cohort, gene, sample, log2_expression
FROM read_parquet('{root}/expression/**/*.parquet', hive_partitioning = true);

-- gene_promoters: expressed genes whose promoter (TSS +- 1 kb) holds at least one kept probe.
CREATE OR REPLACE VIEW gene_promoters AS
SELECT cohort, gene, chromosome, "start", "end", strand, tss, n_promoter_probes
FROM read_parquet('{root}/gene_promoters/**/*.parquet', hive_partitioning = true);

-- gene_windows: probes within [promoter start - W, promoter end + W]; distance_to_tss < 0 upstream.
CREATE OR REPLACE VIEW gene_windows AS
SELECT cohort, gene, window_bp, probe_id, chromosome, position, distance_to_tss
FROM read_parquet('{root}/gene_windows/**/*.parquet', hive_partitioning = true);
