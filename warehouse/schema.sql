-- One view per table. Each table is a tree of Parquet files, one or more per partition
-- (<root>/<table>/cohort=<COHORT>[/chromosome=<chr>]/part-<commit>-<n>.parquet), written by the
-- Dagster assets. {files} is the list of the table's files in the committed snapshot
-- (<root>/_manifest.json, dmg_resources.warehouse): a file it does not list is not read.
-- Partition keys (cohort, chromosome) come from the directory names.

-- samples: every barcode of a cohort's methylation and expression files.
CREATE OR REPLACE VIEW samples AS
SELECT cohort, sample, patient, sample_type_code, tissue, in_methylation, in_expression, kept
FROM read_parquet({files}, hive_partitioning = true);

-- probes: 450K probes with hg19 coordinates measured in a cohort, with their missing fraction;
-- kept = false when more than 20% of samples miss the probe.
CREATE OR REPLACE VIEW probes AS
SELECT cohort, probe_id, chromosome, position, missing_fraction, kept
FROM read_parquet({files}, hive_partitioning = true);

-- m_values: M = log2(beta / (1 - beta)), clamped to [-10, 10]; imputed = filled by kNN.
CREATE OR REPLACE VIEW m_values AS
SELECT cohort, chromosome, probe_id, sample, m_value, imputed
FROM read_parquet({files}, hive_partitioning = true);

-- expression: log2(RSEM + 1) of genes with mean > 1, samples present in both matrices.
CREATE OR REPLACE VIEW expression AS
SELECT cohort, gene, sample, log2_expression
FROM read_parquet({files}, hive_partitioning = true);

-- gene_promoters: expressed genes whose promoter (TSS +- 1 kb) holds at least one kept probe.
CREATE OR REPLACE VIEW gene_promoters AS
SELECT cohort, gene, chromosome, "start", "end", strand, tss, n_promoter_probes
FROM read_parquet({files}, hive_partitioning = true);

-- gene_windows: probes within [promoter start - W, promoter end + W]; distance_to_tss < 0 upstream.
CREATE OR REPLACE VIEW gene_windows AS
SELECT cohort, gene, window_bp, probe_id, chromosome, position, distance_to_tss
FROM read_parquet({files}, hive_partitioning = true);

-- Cross-validation tables: every model of the comparison, the CNN included, scored by one engine
-- on the same outer folds (docs/design.md §5). Partitioned by cohort, chromosome, protocol
-- ('honest' or the 'published' audit) and window_bp; within a partition rows are keyed by model
-- and tissue (the samples trained and scored on: 'all', 'tumour' or 'normal'), so variants sit
-- side by side. The CNN trained with its last epoch's weights kept (the authors' script) is the
-- model 'cnn_last_epoch'. R² (r2) is the coefficient of determination; r² (pearson_r2) the
-- squared Pearson correlation.

-- gene_metrics: one row per model and gene; r2 and pearson_r2 are pooled over out-of-fold
-- predictions, mean_fold_* the means over the outer folds.
CREATE OR REPLACE VIEW gene_metrics AS
SELECT cohort, chromosome, protocol, window_bp, tissue, model, gene, n_cpgs, n_samples, r2,
       pearson_r2, mean_fold_r2, mean_fold_pearson_r2, seconds, run_id, trained_at
FROM read_parquet({files}, hive_partitioning = true);

-- fold_metrics: R² and r² per model, gene and outer fold (n_train: the fold's training rows).
CREATE OR REPLACE VIEW fold_metrics AS
SELECT cohort, chromosome, protocol, window_bp, tissue, model, gene, fold, n_train, n_test, r2,
       pearson_r2, seconds, run_id
FROM read_parquet({files}, hive_partitioning = true);

-- predictions: every sample's out-of-fold prediction per model and gene (every model on the
-- same outer folds: join on cohort, protocol, window_bp, tissue, gene, sample).
CREATE OR REPLACE VIEW predictions AS
SELECT cohort, chromosome, protocol, window_bp, tissue, model, gene, sample, fold, y_true,
       y_pred, run_id
FROM read_parquet({files}, hive_partitioning = true);

-- cnn_training: what the CNN's training did per gene and fold: rows held out for early stopping
-- (n_valid, of the fold's n_train), epochs run, the best epoch, the weights kept ('best' restored,
-- as the paper; 'last', as the authors' script), precision and trainer.
CREATE OR REPLACE VIEW cnn_training AS
SELECT cohort, chromosome, protocol, window_bp, tissue, model, gene, fold, n_valid, epochs_run,
       best_epoch, weights, precision, trainer, run_id
FROM read_parquet({files}, hive_partitioning = true);

-- model_registry: the saved models, one file per model and gene holding its final model
-- (final_model; trained on every sample, what prediction uses) and/or n_folds fold models, probe
-- order, config; weights_dtype fp16 where half precision moved the gene's out-of-fold R² by less
-- than 1e-3 (half_precision_delta_r2), bytes the file's size.
CREATE OR REPLACE VIEW model_registry AS
SELECT cohort, chromosome, protocol, window_bp, tissue, model, gene, path, sha256, n_cpgs,
       n_folds, final_model, config, r2, pearson_r2, weights_dtype, half_precision_delta_r2,
       bytes, run_id
FROM read_parquet({files}, hive_partitioning = true);

-- model_superseded: registry rows of models a retrain replaced with a lower out-of-fold R²
-- (superseded_by_r2, by the run superseded_by_run_id); their files are kept, so the better model
-- stays loadable (dmg_resources.checkpoints.CheckpointStore.load(path, sha256)).
CREATE OR REPLACE VIEW model_superseded AS
SELECT cohort, chromosome, protocol, window_bp, tissue, model, gene, path, sha256, n_cpgs,
       n_folds, final_model, config, r2, pearson_r2, weights_dtype, half_precision_delta_r2,
       bytes, run_id, superseded_by_run_id, superseded_by_r2, superseded_at
FROM read_parquet({files}, hive_partitioning = true);

-- model_summary: one row per cohort, protocol, window, tissue and model: genes, mean and median
-- R² and r², mean CpGs per window, and the mean of the protocol's headline figure
-- (headline_metric names the gene_metrics column: dmg_ml.evaluation.protocols.headline_metric).
CREATE OR REPLACE VIEW model_summary AS
SELECT cohort, protocol, window_bp, tissue, model, genes, mean_r2, median_r2, mean_pearson_r2,
       median_pearson_r2, mean_n_cpgs, headline_metric, mean_headline
FROM read_parquet({files}, hive_partitioning = true);

-- Per-cohort tables computed from every model's gene metrics.

-- model_comparison: every pair of models per cohort, protocol, window and tissue over their
-- common genes, for metric r2 and pearson_r2: mean/median delta (a - b), wins, Wilcoxon p, 95 % CI.
CREATE OR REPLACE VIEW model_comparison AS
SELECT cohort, protocol, window_bp, tissue, model_a, model_b, metric, genes, mean_delta, median_delta,
       share_a_wins, share_b_wins, wilcoxon_p, ci_low, ci_high
FROM read_parquet({files}, hive_partitioning = true);

-- r2_by_cpg_count: per cohort, protocol, window, model and bin of CpGs in the window: genes,
-- mean and median R², mean r² (the paper's CpG-count experiment).
CREATE OR REPLACE VIEW r2_by_cpg_count AS
SELECT cohort, protocol, window_bp, tissue, model, cpg_bin, bin_low, genes, mean_r2, median_r2,
       mean_pearson_r2, median_n_cpgs
FROM read_parquet({files}, hive_partitioning = true);

-- Experiments (docs/design.md §5), each written by its asset, one row per model and gene.

-- tissue_experiment: every model trained and scored on all, tumour-only and normal-only samples.
CREATE OR REPLACE VIEW tissue_experiment AS
SELECT cohort, protocol, window_bp, tissue, model, gene, n_cpgs, n_samples, r2, pearson_r2,
       mean_fold_r2, mean_fold_pearson_r2, run_id
FROM read_parquet({files}, hive_partitioning = true);

-- window_experiment: every model on the genes present in every window size (1 kb to 1 Mb).
CREATE OR REPLACE VIEW window_experiment AS
SELECT cohort, protocol, window_bp, tissue, model, gene, n_cpgs, n_samples, r2, pearson_r2,
       mean_fold_r2, mean_fold_pearson_r2, run_id
FROM read_parquet({files}, hive_partitioning = true);

-- generalisation: models trained on source_cohort (its honest fold models) predicting the same
-- gene in target_cohort: R² and r² of the mean of the fold models' predictions; coverage is the
-- share of the gene's CpGs the target measured (the others take the training mean).
CREATE OR REPLACE VIEW generalisation AS
SELECT cohort AS source_cohort, target_cohort, protocol, window_bp, model, gene, n_cpgs, coverage,
       n_samples, r2, pearson_r2, run_id
FROM read_parquet({files}, hive_partitioning = true);

-- Prediction for new samples (dmg predict, or prediction_job), partitioned by
-- batch (one file of new samples; a batch that holds rows is predicted again only with
-- --replace, or replace: true in the asset's config). The batch name is
-- read as text whatever it looks like.

-- predicted_expression: log2 expression predicted for each sample and gene of a batch by the
-- training cohort's honest CNNs: prediction is the mean of the gene's fold models, lower and upper
-- their range (the models' spread, not an interval for the measured value); coverage is the share
-- of the gene's probes the sample had, the n_missing_probes others taking the training mean;
-- scale is what the file held ('beta' or 'm_value').
CREATE OR REPLACE VIEW predicted_expression AS
SELECT batch, sample, gene, model, training_cohort, protocol, window_bp, prediction, lower, upper,
       coverage, n_missing_probes, scale, run_id
FROM read_parquet({files}, hive_partitioning = true,
                  hive_types = {'batch': VARCHAR});

-- prediction_skipped: what a batch did not predict, with the reason: a gene (sample null) whose
-- honest R² or probe coverage is below the threshold, or a sample left out of one gene for its
-- own coverage. coverage is null for a gene left out for its R² (its model was not read).
CREATE OR REPLACE VIEW prediction_skipped AS
SELECT batch, gene, sample, reason, coverage, run_id
FROM read_parquet({files}, hive_partitioning = true,
                  hive_types = {'batch': VARCHAR});
