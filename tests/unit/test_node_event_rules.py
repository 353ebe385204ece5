"""Node events go out only while some rule on the bus could match them: the rules' patterns read
conservatively (domain/event_rules.py), listed at most once per RULES_TTL_SECONDS (services/notify.py),
and sent regardless when the rules cannot be listed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from tests.support.fakes import Fakes, refuse_aws

from relayflow_runtime.domain.event_rules import any_rule_could_match, pattern_could_match
from relayflow_runtime.services import notify

NODE = ("relayflow", "Node Execution Finished")
CTX = {"tenant": "t", "workflow_id": "wf", "version_id": "v", "execution_id": "x", "mode": "single"}
NODE_DICT = {"id": "n1", "name": "first", "idx": 0}


@pytest.fixture(autouse=True)
def fresh_rules(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    refuse_aws(monkeypatch)
    notify.forget_rules()
    yield
    notify.forget_rules()


@pytest.mark.parametrize(
    ("pattern", "matches"),
    [
        # the template's own rules: status changes and rejected uploads only
        ({"source": ["relayflow"], "detail-type": ["Execution Status Change"]}, False),
        ({"source": ["relayflow"], "detail-type": ["Upload Rejected"], "detail": {"x": [1]}}, False),
        ({"source": ["aws.states"], "detail-type": ["Step Functions Execution Status Change"]}, False),
        # rules that may receive node events
        ({"source": ["relayflow"]}, True),
        ({"detail-type": ["Node Execution Finished"]}, True),
        ({"detail": {"status": ["failed"]}}, True),  # no source nor detail-type: anything may match
        ({}, True),
        ({"source": [{"prefix": "relay"}], "detail-type": [{"prefix": "Node"}]}, True),
        ({"source": [{"prefix": "aws."}]}, False),
        ({"detail-type": [{"suffix": "Finished"}]}, True),
        ({"detail-type": [{"suffix": "Change"}]}, False),
        ({"detail-type": [{"equals-ignore-case": "node execution finished"}]}, True),
        ({"detail-type": [{"prefix": {"equals-ignore-case": "NODE"}}]}, True),
        ({"detail-type": [{"wildcard": "Node*Finished"}]}, True),
        ({"detail-type": [{"wildcard": "Execution*"}]}, False),
        ({"detail-type": [{"anything-but": "Execution Status Change"}]}, True),
        ({"detail-type": [{"anything-but": ["Node Execution Finished", "Upload Rejected"]}]}, False),
        ({"detail-type": [{"anything-but": {"prefix": "Node"}}]}, False),
        ({"detail-type": [{"anything-but": {"prefix": "Execution"}}]}, True),
        ({"detail-type": [{"anything-but": {"prefix": 5}}]}, True),  # unsure: it may match
        ({"detail-type": [{"anything-but": {"suffix": {"equals-ignore-case": "FINISHED"}}}]}, False),
        ({"source": [{"exists": True}]}, True),
        ({"source": [{"exists": False}]}, False),
        ({"detail-type": [{"numeric": [">", 0]}]}, False),
        ({"detail-type": [{"some-future-matcher": 1}]}, True),  # unknown: it may match
        (
            {
                "$or": [
                    {"detail-type": ["Execution Status Change"]},
                    {"detail-type": ["Node Execution Finished"]},
                ]
            },
            True,
        ),
        (
            {"$or": [{"detail-type": ["Execution Status Change"]}, {"detail-type": ["Upload Rejected"]}]},
            False,
        ),
        ({"source": ["other"], "$or": [{"detail-type": ["Node Execution Finished"]}]}, False),
    ],
)
def test_a_rule_could_match_node_events_as_its_source_and_detail_type_say(
    pattern: Any, matches: bool
) -> None:
    assert pattern_could_match(json.dumps(pattern), *NODE) is matches


def test_a_rule_without_a_pattern_never_matches_and_an_unreadable_one_may() -> None:
    # a schedule has no EventPattern: events put on the bus never reach it
    assert pattern_could_match(None, *NODE) is False
    assert pattern_could_match("{not json", *NODE) is True
    assert any_rule_could_match([], *NODE) is False
    assert any_rule_could_match([None, '{"source": ["relayflow"]}'], *NODE) is True


def finish(fakes: Fakes) -> None:
    notify.node_finished(CTX, NODE_DICT, {"attempts": 1}, "completed", None, env=fakes.deps)


def node_events(fakes: Fakes) -> list[dict[str, Any]]:
    return [detail for kind, detail in fakes.bus.taken if kind == notify.NODE_FINISHED]


def test_without_a_rule_for_them_node_events_are_not_sent() -> None:
    # Given a bus whose rules match status changes only, and one schedule
    fakes = Fakes()
    fakes.bus.patterns = ['{"source": ["relayflow"], "detail-type": ["Execution Status Change"]}', None]
    # When nodes finish
    finish(fakes)
    finish(fakes)
    # Then nothing is put on the bus, and the rules were listed once
    assert node_events(fakes) == [] and fakes.bus.listed == 1


def test_a_rule_for_node_events_gets_them_with_the_same_fields() -> None:
    fakes = Fakes()
    fakes.bus.patterns = ['{"detail-type": [{"prefix": "Node"}]}']
    finish(fakes)
    [detail] = node_events(fakes)
    assert detail == notify.node_event(CTX, NODE_DICT, {"attempts": 1}, "completed", None) | {
        "time": detail["time"]
    }


def test_what_was_read_of_the_rules_is_read_again_after_the_ttl() -> None:
    # Given a bus without a rule for node events, read once
    fakes = Fakes()
    fakes.bus.patterns = []
    finish(fakes)
    # When a rule is added, it is not seen before the TTL has passed
    fakes.bus.patterns = ['{"source": ["relayflow"]}']
    fakes.clock.advance(notify.RULES_TTL_SECONDS - 1)
    finish(fakes)
    assert node_events(fakes) == [] and fakes.bus.listed == 1
    # And once it has, the rules are listed again and the node events go out
    fakes.clock.advance(1)
    finish(fakes)
    assert len(node_events(fakes)) == 1 and fakes.bus.listed == 2


def test_when_the_rules_cannot_be_listed_node_events_are_sent() -> None:
    fakes = Fakes()
    fakes.bus.patterns = []
    fakes.bus.listing_fails = True
    finish(fakes)
    assert len(node_events(fakes)) == 1


def test_batch_runs_list_no_rules_and_send_no_node_events() -> None:
    fakes = Fakes()
    notify.node_finished(CTX | {"mode": "batch"}, NODE_DICT, None, "completed", None, env=fakes.deps)
    assert fakes.bus.listed == 0 and fakes.bus.taken == []


def test_the_bus_lists_every_page_of_its_rules_and_waits_out_a_throttle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given ListRules answering in two pages, the second after a throttle
    import boto3
    from botocore.stub import Stubber

    from relayflow_runtime.adapters import aws, events

    client = boto3.client("events", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    stub = Stubber(client)
    stub.add_response(
        "list_rules",
        {"Rules": [{"Name": "a", "EventPattern": "{}"}], "NextToken": "p2"},
        {"EventBusName": "bus"},
    )
    stub.add_client_error(
        "list_rules", "ThrottlingException", expected_params={"EventBusName": "bus", "NextToken": "p2"}
    )
    stub.add_response(
        "list_rules",
        {"Rules": [{"Name": "b", "ScheduleExpression": "rate(1 hour)"}]},
        {"EventBusName": "bus", "NextToken": "p2"},
    )
    monkeypatch.setattr(aws, "client", lambda service: client)
    # When the bus's rules are listed
    with stub:
        patterns = events.EventBus("bus").rule_patterns()
        # Then both pages were read, the throttled call asked again; a schedule has no pattern
        stub.assert_no_pending_responses()
    assert patterns == ["{}", None]
