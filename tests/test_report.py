"""The evaluation report: well-formed, self-contained HTML whose numbers are the inputs' numbers."""

import base64
import copy
import functools
import html
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dmg_ml.evaluation import report
from dmg_ml.evaluation.compare import paired_comparison
from dmg_ml.evaluation.report import (
    HOW_TO_RUN,
    NEAR_CEILING,
    ReportInputs,
    bootstrap_interval,
    ceiling_table,
    headline_table,
    primary_scope,
    render_report,
    report_figures,
)

MODELS = ("cnn", "enet", "rf", "svr", "mean")
SKILL = {"cnn": 0.8, "enet": 0.75, "rf": 0.6, "svr": 0.5, "mean": 0.0}
WINDOWS = (1_000, 10_000, 100_000, 1_000_000)
IMG = '<img src="data:image/png;base64,'
VOID = {"meta", "img", "br", "hr", "link", "input", "col", "area", "base", "wbr", "source"}


def _gene_metrics(n_genes=69, seed=0, models=MODELS, window=1_000_000, tissue="all",
                  cohort="SYNTH", gene_prefix="G") -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    genes = [f"{gene_prefix}{i:03d}" for i in range(n_genes)]
    expected = rng.uniform(0.0, 0.8, n_genes)
    rows = []
    for protocol in ("honest", "published"):
        for model in models:
            r2 = SKILL[model] * expected + rng.normal(0, 0.08, n_genes)
            if protocol == "published":
                r2 = r2 + 0.1
            pearson = np.clip(r2 + rng.uniform(0, 0.1, n_genes), 0, 1)
            for i, gene in enumerate(genes):
                rows.append({
                    "cohort": cohort, "protocol": protocol, "window_bp": window,
                    "tissue": tissue, "model": model, "gene": gene,
                    "n_cpgs": int(rng.integers(1, 1200)), "n_samples": 120,
                    "r2": r2[i], "pearson_r2": pearson[i] if model != "mean" else np.nan,
                    "mean_fold_r2": r2[i] + 0.02, "mean_fold_pearson_r2": pearson[i] + 0.03,
                    "run_id": f"run-{model}-{protocol}",
                })
    return pd.DataFrame(rows), pd.DataFrame({"gene": genes, "expected_r2": expected})


def _by_cpg_count(metrics: pd.DataFrame) -> pd.DataFrame:
    edges = [1, 25, 50, 100, 200, 400, 800, np.inf]
    labels = ["1-24", "25-49", "50-99", "100-199", "200-399", "400-799", "800+"]
    binned = metrics.assign(cpg_bin=pd.cut(metrics["n_cpgs"], edges, right=False, labels=labels))
    table = (binned.groupby(["cohort", "protocol", "window_bp", "tissue", "model", "cpg_bin"],
                            observed=True)
             .agg(genes=("gene", "size"), mean_r2=("r2", "mean"), median_r2=("r2", "median"),
                  mean_pearson_r2=("pearson_r2", "mean"), median_n_cpgs=("n_cpgs", "median"))
             .reset_index())
    table["cpg_bin"] = table["cpg_bin"].astype(str)
    table["bin_low"] = table["cpg_bin"].map(dict(zip(labels, edges, strict=False)))
    return table


def _summary(metrics: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    return (metrics.groupby(by).agg(genes=("gene", "size"), mean_r2=("r2", "mean"),
                                    median_r2=("r2", "median"),
                                    mean_pearson_r2=("pearson_r2", "mean"),
                                    median_pearson_r2=("pearson_r2", "median"))
            .reset_index())


def _inputs(n_genes=69, seed=0, synthetic=True) -> ReportInputs:
    metrics, truth = _gene_metrics(n_genes, seed)
    comparison = pd.concat(
        [paired_comparison(metrics, m).assign(tissue="all") for m in ("pearson_r2", "r2")],
        ignore_index=True,
    )
    rng = np.random.default_rng(seed + 1)
    windows = pd.concat([metrics.assign(window_bp=w, r2=metrics["r2"] - 0.05 * k)
                         for k, w in enumerate(reversed(WINDOWS))])
    tissues = pd.concat([metrics.assign(tissue=t, r2=metrics["r2"] - d,
                                        n_samples=n)
                         for t, d, n in (("all", 0, 120), ("tumour", 0.02, 100),
                                         ("normal", 0.1, 20))])
    by_tissue = _summary(tissues, ["cohort", "protocol", "window_bp", "model", "tissue"])
    by_tissue["median_n_samples"] = by_tissue["tissue"].map({"all": 120, "tumour": 100,
                                                             "normal": 20})
    generalisation = _summary(metrics[metrics["protocol"] == "honest"],
                              ["protocol", "window_bp", "model"])
    generalisation = pd.concat([generalisation.assign(source_cohort="SYNTH", target_cohort=t,
                                                      mean_r2=generalisation["mean_r2"] - 0.1,
                                                      mean_coverage=rng.uniform(0.8, 1))
                                for t in ("COAD", "LUAD")], ignore_index=True)
    return ReportInputs(
        cohort="SYNTH",
        gene_metrics=metrics,
        comparison=comparison,
        by_cpg_count=_by_cpg_count(metrics),
        by_window=_summary(windows, ["cohort", "protocol", "tissue", "model", "window_bp"]),
        by_tissue=by_tissue,
        generalisation=generalisation,
        ground_truth=truth if synthetic else None,
        provenance={"run ids": "run-cnn-honest, run-enet-honest", "config": "window_bp=1000000",
                    "generated": "2026-01-01T00:00:00+00:00", "warehouse": "/tmp/w.duckdb"},
    )


class _Checker(HTMLParser):
    """Every non-void tag closed in order; collects the image sources."""

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.images, self.tags = [], [], [], set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def _parse(document: str) -> _Checker:
    checker = _Checker()
    checker.feed(document)
    checker.close()
    assert not checker.errors and not checker.stack, (checker.errors, checker.stack)
    return checker


@pytest.fixture(scope="module")
def full():
    inputs = _inputs()
    return inputs, render_report(inputs)


def test_the_full_report_is_well_formed_self_contained_and_small(full):
    inputs, document = full
    checker = _parse(document)
    assert document.startswith("<!DOCTYPE html>") and {"html", "head", "body"} <= checker.tags
    assert "http://" not in document and "https://" not in document
    assert not re.search(r"<(script|link|iframe)\b", document)
    # five figure sections had data: scatter, CpG count, window, tissue, ceiling
    assert document.count(IMG) == len(checker.images) == 5
    figures = report_figures(inputs)
    assert set(figures) == {"cnn-vs-enet", "cpg-count", "window", "tissue", "ceiling"}
    for source in checker.images:
        png = base64.b64decode(source.split(",", 1)[1], validate=True)
        assert png.startswith(b"\x89PNG") and png in figures.values()
    assert "not run" not in document
    assert len(document.encode()) < 2_000_000
    # sections in the order of the brief
    ids = re.findall(r'<section id="([^"]+)"', document)
    assert ids == ["headline", "comparison", "cnn-vs-enet", "cpg-count", "window", "tissue",
                   "generalisation", "ceiling", "genes"]


def test_the_renderer_is_pure():
    modules = sorted(Path(report.__file__).parent.glob("*.py"))
    assert len(modules) > 1  # a package
    source = "\n".join(module.read_text() for module in modules)
    imports = re.findall(r"^\s*(?:from|import)\s+([\w.]+)", source, flags=re.M)
    assert not [m for m in imports if m.startswith(("dagster", "dmg_assets", "dmg_resources"))]
    # figures are matplotlib.figure.Figure, never pyplot's: no global figure is left open
    assert "matplotlib.pyplot" not in imports and "plt." not in source


def test_every_figure_names_its_scope_and_how_many_runs_made_it(full):
    _, document = full
    for anchor in ("cnn-vs-enet", "cpg-count", "window", "tissue", "ceiling"):
        caption = re.search(r"<figcaption>(.*?)</figcaption>",
                            _section(document, anchor), flags=re.S)[1]
        assert "±1 Mb" in caption or "Tissue all" in caption, anchor
    scatter = _section(document, "cnn-vs-enet")
    assert '<a href="#provenance">2 runs</a>' in scatter  # run-cnn-honest and run-enet-honest
    provenance = re.search(r'<details[^>]*id="provenance".*?</details>', document, flags=re.S)[0]
    assert "run-cnn-honest" in provenance and "window_bp=1000000" in provenance


def test_headline_numbers_are_pandas_numbers_on_the_input(full):
    inputs, document = full
    table = headline_table(inputs).set_index(["model", "protocol"])
    metrics = inputs.gene_metrics
    honest_enet = metrics[(metrics["protocol"] == "honest") & (metrics["model"] == "enet")]
    row = table.loc[("enet", "honest")]
    assert row["r2_mean"] == pytest.approx(honest_enet["r2"].mean())
    assert row["r2_median"] == pytest.approx(honest_enet["r2"].median())
    assert row["pearson_r2_mean"] == pytest.approx(honest_enet["pearson_r2"].mean())
    assert row["r2_genes"] == 69 and row["statistic"] == "pooled out-of-fold"
    # the published audit is scored as the authors scored it: the mean of per-fold values
    published_cnn = metrics[(metrics["protocol"] == "published") & (metrics["model"] == "cnn")]
    row = table.loc[("cnn", "published")]
    assert row["pearson_r2_mean"] == pytest.approx(published_cnn["mean_fold_pearson_r2"].mean())
    assert row["r2_mean"] == pytest.approx(published_cnn["mean_fold_r2"].mean())
    # r² of the constant mean model is undefined: no genes, no number, no crash
    assert table.loc[("mean", "honest"), "pearson_r2_genes"] == 0
    assert np.isnan(table.loc[("mean", "honest"), "pearson_r2_mean"])
    # honest and published side by side for each model, best honest model first
    assert list(table.index) == [(m, p) for m in MODELS for p in ("honest", "published")]
    assert f"{honest_enet['r2'].mean():.3f}" in document
    assert document.count('<tr class="audit">') == len(MODELS)


def test_bootstrap_interval_contains_the_mean_narrows_with_genes_and_is_seeded():
    rng = np.random.default_rng(3)
    few, many = rng.normal(0.4, 0.2, 20), rng.normal(0.4, 0.2, 2000)
    low_few, high_few = bootstrap_interval(few)
    low_many, high_many = bootstrap_interval(many)
    assert low_few < few.mean() < high_few and low_many < many.mean() < high_many
    assert high_many - low_many < (high_few - low_few) / 5
    assert bootstrap_interval(few) == (low_few, high_few)
    assert bootstrap_interval(few, seed=1) != (low_few, high_few)
    assert bootstrap_interval([0.3]) == (0.3, 0.3)
    assert all(np.isnan(bootstrap_interval([])))
    table = headline_table(_inputs(n_genes=10))
    assert ((table["r2_ci_low"] <= table["r2_mean"]) & (table["r2_mean"] <= table["r2_ci_high"])
            ).all()


def test_missing_experiments_say_how_to_run_them_and_draw_nothing():
    inputs = _inputs(synthetic=False)
    inputs.gene_metrics = inputs.gene_metrics[inputs.gene_metrics["model"] != "cnn"]
    inputs.comparison = inputs.comparison.iloc[:0]
    inputs.by_cpg_count = inputs.by_cpg_count.iloc[:0]
    inputs.by_window = None
    inputs.by_tissue = pd.DataFrame()
    inputs.generalisation = None
    document = render_report(inputs)
    _parse(document)
    assert IMG not in document and report_figures(inputs) == {}
    for key in ("comparison", "cnn", "cpg", "window", "tissue", "generalisation", "ceiling"):
        assert html.escape(HOW_TO_RUN[key]) in document, key
    assert "No CNN rows" in document and "materialise window_experiment" in document
    assert "is not a synthetic cohort" in document
    assert ceiling_table(inputs) is None


def test_one_window_or_one_tissue_is_not_an_experiment():
    inputs = _inputs()
    inputs.by_window = inputs.by_window[inputs.by_window["window_bp"] == 1_000_000]
    inputs.by_tissue = inputs.by_tissue[inputs.by_tissue["tissue"] == "all"]
    document = render_report(inputs)
    assert "Only one window (±1 Mb)" in document and "Only one tissue (all)" in document
    assert document.count(IMG) == 3


def test_no_gene_metrics_at_all_still_renders():
    empty = ReportInputs(cohort="BRCA", gene_metrics=pd.DataFrame(), comparison=pd.DataFrame(),
                         by_cpg_count=pd.DataFrame(), ground_truth=pd.DataFrame())
    document = render_report(empty)
    _parse(document)
    assert headline_table(empty).empty and IMG not in document
    assert html.escape(HOW_TO_RUN["headline"]) in document


def test_strings_from_data_are_escaped():
    inputs = _inputs(n_genes=8)
    attack = "<script>alert(1)</script>"
    metrics = inputs.gene_metrics
    inputs.gene_metrics = metrics.assign(model=metrics["model"].replace("rf", attack))
    inputs.by_tissue = inputs.by_tissue.assign(model=inputs.by_tissue["model"].replace("rf",
                                                                                       attack))
    inputs.comparison = inputs.comparison.assign(model_a=attack)
    inputs.cohort = f"BRCA{attack}"
    inputs.provenance = {**inputs.provenance, "config": attack, f"x{attack}": "$a$ & b"}
    document = render_report(inputs)
    _parse(document)
    assert "<script" not in document
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in document


def test_p_values_are_two_significant_digits_and_numbers_three_decimals():
    inputs = _inputs(n_genes=12)
    inputs.comparison = inputs.comparison.assign(wilcoxon_p=1.23456e-5, mean_delta=0.123456)
    document = render_report(inputs)
    assert "<td class=\"num\">1.2e-05</td>" in document
    assert "<td class=\"num\">0.123</td>" in document and "0.1234" not in document
    r2_rows = document.index('<td>R²</td>')
    assert r2_rows < document.index('<td>r²</td>')  # R² comparison rows come first


def test_ceiling_gap_is_expected_minus_r2_on_shared_genes():
    metrics = pd.DataFrame({
        "cohort": "SYNTH", "protocol": "honest", "window_bp": 1_000_000, "tissue": "all",
        "model": ["cnn"] * 3 + ["enet"] * 3 + ["cnn"],
        "gene": ["A", "B", "C", "A", "B", "C", "D"],
        "r2": [0.50, 0.30, 0.26, 0.10, 0.20, 0.30, 0.9],
        "pearson_r2": 0.5, "run_id": "r",
    })
    published = metrics.assign(protocol="published", r2=0.99)
    truth = pd.DataFrame({"gene": ["A", "B", "C", "E"], "expected_r2": [0.52, 0.40, 0.30, 0.5]})
    inputs = ReportInputs(cohort="SYNTH", gene_metrics=pd.concat([metrics, published]),
                          comparison=pd.DataFrame(), by_cpg_count=pd.DataFrame(),
                          ground_truth=truth)
    table = ceiling_table(inputs).set_index("model")
    gaps = {"cnn": [0.02, 0.10, 0.04], "enet": [0.42, 0.20, 0.0]}
    for model, gap in gaps.items():
        assert table.loc[model, "genes"] == 3
        assert table.loc[model, "mean_gap"] == pytest.approx(np.mean(gap))
        assert table.loc[model, "median_gap"] == pytest.approx(np.median(gap))
        assert table.loc[model, "share_near_ceiling"] == pytest.approx(
            np.mean(np.array(gap) <= NEAR_CEILING + 1e-12))
        assert table.loc[model, "mean_expected_r2"] == pytest.approx(np.mean([0.52, 0.40, 0.30]))
    assert list(table.index) == ["cnn", "enet"]
    document = render_report(inputs)
    assert document.count(IMG) == 2  # the CNN-vs-enet scatter and the ceiling
    assert "<th>share near ceiling</th>" in document and "<td class=\"num\">0.667</td>" in document
    inputs.ground_truth = None
    assert ceiling_table(inputs) is None


def test_primary_scope_prefers_all_samples_and_the_default_window():
    metrics, _ = _gene_metrics(n_genes=4, window=100_000, tissue="normal")
    default, _ = _gene_metrics(n_genes=2, window=1_000_000, tissue="all")
    assert primary_scope(metrics) == (100_000, "normal")
    assert primary_scope(pd.concat([metrics, default])) == (1_000_000, "all")
    assert primary_scope(metrics.drop(columns="tissue")) == (100_000, "all")


# ---------------------------------------------------------------------------------------------
# Issue 23 case 7: what a new user sees first, and what they can take away


SYNTHETIC_URL = "file:///home/user/dmg/data/synthetic"
XENA_URL = "https://tcga-xena-hub.s3.us-east-1.amazonaws.com/download/"


class _Text(HTMLParser):
    """The visible text chunks of the body in order, each with the ids of its open elements."""

    def __init__(self):
        super().__init__()
        self.ids, self.chunks, self.in_body = [], [], False

    def handle_starttag(self, tag, attrs):
        self.in_body |= tag == "body"
        if tag not in VOID:
            self.ids.append(dict(attrs).get("id"))

    def handle_endtag(self, tag):
        if self.ids:
            self.ids.pop()

    def handle_data(self, data):
        if self.in_body and data.strip():
            self.chunks.append(([i for i in self.ids if i], data.strip()))


@functools.cache
def _built(n_genes: int) -> ReportInputs:
    return _inputs(n_genes=n_genes)


def _fresh(n_genes: int) -> ReportInputs:
    """A private copy of the inputs of ``n_genes`` genes, built once per module."""
    return copy.deepcopy(_built(n_genes))


def _texts(document: str) -> list[tuple[list[str], str]]:
    parser = _Text()
    parser.feed(document)
    return parser.chunks


def _section(document: str, anchor: str) -> str:
    match = re.search(rf'<section id="{anchor}">.*?</section>', document, flags=re.S)
    assert match, anchor
    return match[0]


def _header(document: str) -> str:
    """Everything the page shows before its first section."""
    return document[document.index("<body>"):document.index("<section ")]


def _honest_only(inputs: ReportInputs) -> ReportInputs:
    metrics = inputs.gene_metrics
    inputs.gene_metrics = metrics[metrics["protocol"] == "honest"]
    inputs.comparison = inputs.comparison[inputs.comparison["protocol"] == "honest"]
    return inputs


def _many_runs(inputs: ReportInputs, runs_per_model: int = 12) -> list[str]:
    """One run id per model and 'chromosome', as make run writes them: ~50 for the report."""
    metrics = inputs.gene_metrics.copy()
    chromosome = metrics["gene"].str[1:].astype(int) % runs_per_model
    metrics["run_id"] = [f"{m}-{p[:3]}-chr{c:02d}-5e6f-7a8b-9c0d1e2f3a4b" for m, p, c in
                         zip(metrics["model"], metrics["protocol"], chromosome, strict=True)]
    inputs.gene_metrics = metrics
    runs = sorted(metrics["run_id"].unique())
    inputs.provenance = {**inputs.provenance, "run ids": ", ".join(runs)}
    return runs


def _with_outliers(inputs: ReportInputs) -> ReportInputs:
    """Gene G000 becomes the CNN's best gene by far (TOPGENE), G001 its worst (BADGENE)."""
    metrics = inputs.gene_metrics
    gene = metrics["gene"].replace({"G000": "TOPGENE", "G001": "BADGENE"})
    cnn = metrics["model"] == "cnn"
    r2 = metrics["r2"].mask(cnn & (gene == "TOPGENE"), 0.99).mask(cnn & (gene == "BADGENE"),
                                                                   -2.5)
    inputs.gene_metrics = metrics.assign(gene=gene, r2=r2)
    if inputs.ground_truth is not None:
        inputs.ground_truth = inputs.ground_truth.assign(
            gene=inputs.ground_truth["gene"].replace({"G000": "TOPGENE", "G001": "BADGENE"}))
    return inputs


class _Drawn:
    """Every text matplotlib draws into each saved figure, and the figure's size in pixels."""

    def __init__(self):
        self.figures: list[tuple[list[str], tuple[int, int]]] = []

    def record(self, figure) -> None:
        texts = [t.get_text() for t in figure.texts]
        for axis in figure.axes:
            texts += [t.get_text() for t in axis.texts] + [axis.get_title()]
        width, height = figure.get_size_inches() * figure.dpi
        self.figures.append((texts, (int(width), int(height))))


@pytest.fixture
def drawn(monkeypatch) -> _Drawn:
    from matplotlib.figure import Figure

    recorder, save = _Drawn(), Figure.savefig

    def savefig(self, *args, **kwargs):
        recorder.record(self)
        return save(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return recorder


def test_the_data_source_is_the_first_thing_on_the_page():
    inputs = _fresh(12)
    inputs.source = report.DataSource(url=SYNTHETIC_URL, synthetic=True)
    document = render_report(inputs)
    _parse(document)
    first_ids, first_text = _texts(document)[0]
    assert "data-source" in first_ids and "synthetic" in first_text.lower()
    banner = re.search(r'<[^>]+id="data-source".*?</p>', document, flags=re.S)[0]
    assert SYNTHETIC_URL in banner and "not measured" in banner.lower()
    assert "synthetic data" in re.search(r"<title>(.*?)</title>", document)[1]

    inputs.source = report.DataSource(url=XENA_URL, synthetic=False)
    document = render_report(inputs)
    first_ids, first_text = _texts(document)[0]
    banner = re.search(r'<[^>]+id="data-source".*?</p>', document, flags=re.S)[0]
    assert "data-source" in first_ids and XENA_URL in banner
    assert "synthetic" not in banner.lower() and "synthetic" not in _header(document).lower()

    inputs.source = None
    first_ids, first_text = _texts(render_report(inputs))[0]
    assert "data-source" in first_ids and "not recorded" in first_text


def test_without_published_rows_the_headline_says_so_and_how_to_run_them(full):
    inputs = _honest_only(_fresh(12))
    document = render_report(inputs)
    headline = _section(document, "headline")
    command = "dmg run --cohorts SYNTH --protocol published --seed 42 --keep-last-weights"
    assert "No published-protocol rows" in headline and html.escape(command) in headline
    assert "protocol: published" in headline  # the Launchpad config, for the UI
    assert '<tr class="audit">' not in headline
    assert "published protocol" in _header(document)  # listed among what was not run
    # with published rows there is nothing to explain
    assert "No published-protocol rows" not in full[1]


def test_the_header_lists_what_this_report_did_not_run():
    inputs = _honest_only(_fresh(12))
    inputs.by_window, inputs.generalisation = None, None
    header = _header(render_report(inputs))
    not_run = re.search(r'<[^>]+id="not-run".*?</(p|div|ul)>', header, flags=re.S)[0]
    for what, anchor in (("published protocol", "headline"), ("window", "window"),
                         ("generalisation", "generalisation")):
        assert what in not_run and f'href="#{anchor}"' in not_run, what
    assert "tissue" not in not_run and "CpG" not in not_run  # those ran
    assert 'id="not-run"' not in render_report(_fresh(12))  # everything ran


def test_provenance_is_one_collapsed_block_and_no_footer_repeats_run_ids(drawn):
    inputs = _fresh(24)
    runs = _many_runs(inputs)
    assert len(runs) > 40
    document = render_report(inputs)
    _parse(document)
    blocks = re.findall(r"<details[^>]*>.*?</details>", document, flags=re.S)
    provenance = [b for b in blocks if 'id="provenance"' in b]
    assert len(provenance) == 1 and " open" not in provenance[0].split(">", 1)[0]
    for run_id in runs:
        assert document.count(run_id) == 1 and run_id in provenance[0], run_id
    assert document.count("window_bp=1000000") == 1  # the config, once
    assert 'class="prov"' not in document
    assert drawn.figures
    for texts, _ in drawn.figures:
        assert not any("run" in t or "config" in t for t in texts), texts
    # each figure still says how many runs made it, pointing to the block
    scatter = _section(document, "cnn-vs-enet")
    assert re.search(r'<a href="#provenance">\d+ runs?</a>', scatter)


def test_the_per_gene_csv_is_written_beside_the_page_and_linked(tmp_path):
    inputs = _fresh(12)
    page = tmp_path / "reports" / "SYNTH" / "evaluation_report.html"
    written = report.write_report(inputs, page)
    csv = page.with_name(report.GENES_CSV)
    assert written == (page, csv) and page.exists() and csv.exists()
    assert not list(page.parent.glob(".*"))  # no partial file left behind
    document = page.read_text(encoding="utf-8")
    assert f'href="{report.GENES_CSV}"' in document
    table = pd.read_csv(csv)
    metrics = inputs.gene_metrics
    assert len(table) == len(metrics)  # every protocol, window, tissue, model and gene
    assert {"gene", "model", "protocol", "window_bp", "tissue", "n_cpgs", "n_samples", "r2",
            "pearson_r2", "mean_fold_r2", "mean_fold_pearson_r2", "expected_r2",
            "run_id"} <= set(table.columns)
    row = table[(table["gene"] == "G005") & (table["model"] == "enet")
                & (table["protocol"] == "honest")].iloc[0]
    source = metrics[(metrics["gene"] == "G005") & (metrics["model"] == "enet")
                     & (metrics["protocol"] == "honest")].iloc[0]
    assert row["r2"] == pytest.approx(source["r2"]) and row["n_cpgs"] == source["n_cpgs"]
    truth = inputs.ground_truth.set_index("gene")["expected_r2"]
    assert row["expected_r2"] == pytest.approx(truth["G005"])
    assert list(table.columns) == list(report.gene_table(inputs).columns)


def _per_gene_r2(inputs: ReportInputs, model: str) -> pd.Series:
    metrics = inputs.gene_metrics
    rows = metrics[(metrics["protocol"] == "honest") & (metrics["model"] == model)]
    return rows.set_index("gene")["r2"]


def test_the_page_has_a_per_gene_table_naming_the_best_and_worst_genes():
    inputs = _with_outliers(_fresh(30))
    document = render_report(inputs)
    _parse(document)
    genes = _section(document, "genes")
    assert "<th>gene</th>" in genes and "<th>CpGs</th>" in genes
    assert "TOPGENE" in genes and "BADGENE" in genes
    assert "<td class=\"num\">-2.500</td>" in genes and "<td class=\"num\">0.990</td>" in genes
    text = re.sub(r"<[^>]+>", "", genes.split("<table", 1)[0])
    best, worst = text.index("TOPGENE"), text.index("BADGENE")
    assert "best" in text[:best] and "worst" in text[best:worst]
    assert f'href="{report.GENES_CSV}"' in genes
    # a cohort of thousands of genes shows the best and worst, the CSV has them all
    many = _fresh(250)
    genes = _section(render_report(many), "genes")
    shown = re.findall(r"<tr><td>(G\d+)</td>", genes)
    assert len(shown) == report.MAX_GENE_ROWS and "250 genes" in genes
    ranked = _per_gene_r2(many, "cnn").sort_values(ascending=False)
    half = report.MAX_GENE_ROWS // 2
    assert shown == [*ranked.index[:half], *ranked.index[-half:]]


def test_figures_are_large_and_label_the_outlier_genes(drawn):
    inputs = _with_outliers(_fresh(30))
    document = render_report(inputs)
    assert len(drawn.figures) == 5
    for _, (width, _height) in drawn.figures:
        assert width >= 800
    scatter_texts = drawn.figures[0][0]
    assert "TOPGENE" in scatter_texts and "BADGENE" in scatter_texts
    ceiling_texts = drawn.figures[-1][0]
    assert "BADGENE" in ceiling_texts  # furthest below the ceiling
    scatter = _section(document, "cnn-vs-enet")
    assert "TOPGENE" in scatter and "BADGENE" in scatter  # the caption names them too


def test_negative_generalisation_r2_beside_positive_r2_is_explained():
    inputs = _fresh(12)
    inputs.generalisation = inputs.generalisation.assign(mean_r2=-0.4, median_r2=-0.3,
                                                         mean_pearson_r2=0.31)
    section = _section(render_report(inputs), "generalisation")
    text = re.sub(r"<[^>]+>", "", section)
    assert "negative" in text and "offset" in text and "scale" in text
    assert "COAD" in text.split("negative", 1)[1]  # names where it happened
