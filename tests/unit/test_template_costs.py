"""What the template makes AWS bill beyond the work itself (issue 20): X-Ray traces, sampled at a
parameter's rate and off at 0; the batch Map's ResultWriter output, compact and under the run's own
prefix, where its tenant's data lies and where the run's deletion and retention reach it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tests.unit.test_template import resolved

from relayflow.local import cfn
from relayflow_runtime.services.run_records import execution_prefix

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = cfn.load_template(ROOT / "template.yaml")
RESOURCES: dict[str, Any] = TEMPLATE["Resources"]
MACHINES = sorted(k for k, v in RESOURCES.items() if v["Type"] == "AWS::Serverless::StateMachine")


def _resolved(rate: float) -> tuple[dict[str, Any], dict[str, bool]]:
    context = cfn.Context.from_template(TEMPLATE, parameter_overrides={"TraceSamplingRate": rate})
    return resolved(TraceSamplingRate=rate), context.conditions


@pytest.mark.parametrize("rate", [0.05, 0.5])
def test_traces_are_sampled_at_the_parameters_rate(rate: float) -> None:
    # Given a rate (the default is 5 %)
    assert TEMPLATE["Parameters"]["TraceSamplingRate"]["Default"] == 0.05
    template, conditions = _resolved(rate)
    # Then the functions trace, the machines trace, and X-Ray samples the machines at that rate alone
    assert conditions["TraceRuns"]
    assert template["Globals"]["Function"]["Tracing"] == "Active"
    for machine in MACHINES:
        assert template["Resources"][machine]["Properties"]["Tracing"] == {"Enabled": True}
    rule = template["Resources"]["TraceSamplingRule"]
    assert RESOURCES["TraceSamplingRule"]["Condition"] == "TraceRuns"
    sampling = rule["Properties"]["SamplingRule"]
    assert float(sampling["FixedRate"]) == rate
    assert sampling["ReservoirSize"] == 0  # no reservoir: the share is the rate bench/calls.py costs
    assert sampling["ServiceType"] == "AWS::StepFunctions::StateMachine"
    # the stack's machines only (their names start with the stack's), never the account's others
    assert RESOURCES["TraceSamplingRule"]["Properties"]["SamplingRule"]["ServiceName"] == {
        "Fn::Sub": "${AWS::StackName}-*"
    }
    assert len(sampling["RuleName"]) <= 32


def test_a_rate_of_zero_traces_nothing() -> None:
    template, conditions = _resolved(0)
    assert not conditions["TraceRuns"]
    # PassThrough: a function traces only what a traced caller sampled, and no machine traces
    assert template["Globals"]["Function"]["Tracing"] == "PassThrough"
    for machine in MACHINES:
        assert template["Resources"][machine]["Properties"]["Tracing"] == {"Enabled": False}


def _result_writers(states: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for state in states.values():
        if "ResultWriter" in state:
            found.append(state["ResultWriter"])
        processor = state.get("ItemProcessor") or state.get("Iterator") or {}
        found += _result_writers(processor.get("States") or {})
        for branch in state.get("Branches") or []:
            found += _result_writers(branch["States"])
    return found


def test_the_result_writer_writes_compact_lines_under_the_runs_own_prefix() -> None:
    definition = json.loads((ROOT / "statemachine" / "batch.asl.json").read_text())
    writers = _result_writers(definition["States"])
    assert len(writers) == 2  # the Express and the Standard children's Maps
    # the run's prefix, spelled as the runtime spells it (services/run_records.py)
    prefix = execution_prefix("{}", "{}") + "map-results"
    for writer in writers:
        # COMPACT: each child's output only, not its input again with the execution's metadata
        assert writer["WriterConfig"] == {"OutputType": "JSONL", "Transformation": "COMPACT"}
        expected = f"States.Format('{prefix}', $.run.tenant, $.run.execution_id)"
        assert writer["Parameters"]["Prefix.$"] == expected
        assert "Prefix" not in writer["Parameters"]
    # and what lies under executions/ expires with the run (the bucket's lifecycle rule)
    rules = RESOURCES["DataBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    expiry = {r.get("Prefix"): r.get("ExpirationInDays") for r in rules}
    assert expiry["executions/"] == {"Ref": "RetentionDays"}
