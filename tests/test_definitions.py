import pytest
from dagster import DagsterInstance, Definitions, SensorResult, build_sensor_context

from dmg_assets.definitions import defs
from dmg_assets.partitions import DEFAULT_COHORTS, cohort_partitions
from dmg_assets.sensors import register_default_cohorts


def test_definitions_load_with_every_asset_and_job():
    Definitions.validate_loadable(defs)
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"samples", "probes", "m_values", "expression", "gene_promoters", "gene_windows",
            "gene_metrics", "fold_metrics", "predictions", "cnn_training", "model_registry",
            "model_summary", "model_comparison", "r2_by_cpg_count",
            "tissue_experiment", "window_experiment", "generalisation", "evaluation_report",
            "predicted_expression", "prediction_skipped"} <= keys
    assert not {"cnn_gene_metrics", "cnn_checkpoints", "cnn_summary", "model_gene_metrics"} & keys
    assert defs.resolve_job_def("data_layer_job") and defs.resolve_job_def("evaluation_job")
    assert "training_job" not in {job.name for job in defs.jobs}


def test_sensor_registers_missing_default_cohorts_once():
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(cohort_partitions.name, ["BRCA", "KIRC"])
    result = register_default_cohorts(build_sensor_context(instance=instance))
    assert isinstance(result, SensorResult)
    (request,) = result.dynamic_partitions_requests
    assert list(request.partition_keys) == [c for c in DEFAULT_COHORTS if c != "BRCA"]
    instance.add_dynamic_partitions(cohort_partitions.name, list(request.partition_keys))
    skipped = register_default_cohorts(build_sensor_context(instance=instance))
    assert not isinstance(skipped, SensorResult)


def test_run_driver_maps_its_flags_to_evaluation_config():
    from dmg_assets.evaluation import EvaluationConfig
    from dmg_assets.run import _evaluation_config, build_parser

    args = build_parser().parse_args(["--protocol", "published", "--keep-last-weights",
                                      "--seed", "42", "--max-epochs", "50", "--models", "cnn"])
    config = _evaluation_config(args)["ops"]["model_evaluation"]["config"]
    assert config == {
        "window_bp": 1_000_000, "protocol": "published", "restore_best_weights": False,
        "seed": 42, "max_epochs": 50, "patience": 90, "models": ["cnn"], "genes": [],
    }
    assert EvaluationConfig(**config).cnn_name == "cnn_last_epoch"  # every key is a field


def test_run_driver_options_take_their_defaults_and_choices_from_the_configs(capsys):
    from dmg_assets.run import build_parser
    from dmg_ml.defaults import MODELS
    from dmg_ml.training.reference import TrainConfig

    parser = build_parser()
    defaults = parser.parse_args([])
    assert (defaults.max_epochs, defaults.patience) == (TrainConfig.max_epochs,
                                                        TrainConfig.patience)
    assert defaults.models == list(MODELS) == ["cnn", "enet", "mean", "rf"]
    assert defaults.train is None
    with pytest.raises(SystemExit):
        parser.parse_args(["--protocol", "leaky"])
    assert "invalid choice: 'leaky' (choose from 'honest', 'published')" in capsys.readouterr().err
    help_text = parser.format_help()
    assert "Epochs at most per fold. (default 700)" in help_text


def test_every_asset_and_check_says_what_it_is_in_its_own_words():
    graph = defs.resolve_asset_graph()
    descriptions = {}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.description, f"{key.to_user_string()} has no description"
        descriptions[key.to_user_string()] = node.description
    shared = {d for d in descriptions.values() if list(descriptions.values()).count(d) > 1}
    assert not shared, f"assets share a description: {shared}"
    for spec in defs.resolve_asset_graph().asset_check_keys:
        assert graph.get_check_spec(spec).description, f"check {spec.name} has no description"
