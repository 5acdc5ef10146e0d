"""Retraining follows the data: when a cohort's data-layer tables change, its per-chromosome models
are requested again, by Dagster's declarative automation (docs/design.md §9).

``RETRAIN_ON_NEW_DATA`` sits on ``model_evaluation`` ((cohort, chromosome)
partitions). Their data-layer deps are cohort partitions, and Dagster maps one onto the other by
the ``cohort`` dimension, so a new ``samples``/``expression``/``m_values``/``gene_windows``
partition of BRCA marks all 23 BRCA chromosomes, and no other cohort's.

It is ``AutomationCondition.eager()`` with three changes:

- no ``newly_missing`` trigger: a partition is requested because its inputs changed, never
  merely because a cohort was registered (eager would also request every missing partition on
  the sensor's first tick);
- nothing while a dep's latest execution failed: a data-layer run that failed half-way leaves
  some tables new and some old, and training on that mix is wasted work. The trigger is kept
  (``since_last_handled``), so the next successful data-layer run requests the models once;
- updates written by the ``make run`` driver (runs tagged ``dmg/pid``) do not trigger: the
  driver trains what it built itself, and a ``make dev`` daemon on the same instance must not
  train it a second time.

The requests come from ``automation_sensor`` (on by default), which evaluates every asset that
has an automation condition.
"""

from dagster import (
    AssetSelection,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
)

from dmg_assets.runs import PID_TAG

__all__ = ["RETRAIN_ON_NEW_DATA", "automation_sensor", "retrain_on_new_data"]


def retrain_on_new_data(ignore_runs_tagged: str = PID_TAG) -> AutomationCondition:
    """Request a partition once after its deps were updated, when none of them is missing,
    running or failed, and it is not itself running; a dep whose latest update came from a run
    tagged ``ignore_runs_tagged`` does not count as updated."""
    updated = (
        AutomationCondition.newly_updated()
        & ~AutomationCondition.executed_with_root_target()
        # not all_new_updates_have_run_tags: on an instance with no event before, it is empty
        & ~AutomationCondition.executed_with_tags(tag_keys={ignore_runs_tagged})
    ).with_label("newly_updated_outside_the_driver")
    return (
        AutomationCondition.any_deps_match(updated).with_label("any_deps_updated").since_last_handled()
        & ~AutomationCondition.any_deps_missing()
        & ~AutomationCondition.any_deps_in_progress()
        & ~AutomationCondition.any_deps_match(AutomationCondition.execution_failed()).with_label(
            "any_deps_failed"
        )
        & ~AutomationCondition.in_progress()
    ).with_label("retrain_on_new_data")


RETRAIN_ON_NEW_DATA = retrain_on_new_data()

#: Dagster's default automation sensor, declared to switch it on: it evaluates every asset with
#: an automation condition (today ``model_evaluation``) every 30 s.
automation_sensor = AutomationConditionSensorDefinition(
    "default_automation_condition_sensor",
    target=AssetSelection.all(),
    default_status=DefaultSensorStatus.RUNNING,
    description="Requests the per-chromosome models of a cohort whose data-layer tables changed "
    "(dmg_assets.automation.RETRAIN_ON_NEW_DATA).",
)
