"""When the outputs a releasing parent carried to a node are all its attempt reads
(domain/engine.carried_suffices): then the node reads no records; else it queries them."""

from __future__ import annotations

import pytest

from relayflow_runtime.domain.engine import Carried, CarriedOutput, NodeSpec, carried_suffices

UPSTREAM = {"A": "a", "B": "b", "C": "c"}


def node(template: str, parents: list[str]) -> NodeSpec:
    return NodeSpec.model_validate(
        {
            "id": "d",
            "name": "D",
            "idx": 3,
            "template": template,
            "timeout": 30,
            "parents": parents,
            "upstream": UPSTREAM,
            "model": {"id": "m", "provider": "builtin"},
        }
    )


def carried(*ids: str) -> Carried:
    return Carried(outputs={i: CarriedOutput(output=f"out {i}") for i in ids})


@pytest.mark.parametrize(
    ("template", "parents", "outputs", "suffices"),
    [
        ("{{input}}", ["c"], ("c",), True),
        ("{{nodes.B}} {{nodes.C}} {{input}}", ["b", "c"], ("b", "c"), True),
        ("{{#nodes.C}}{{x}}{{/nodes.C}}", ["c"], ("c",), True),
        # a parent's output missing (it failed with on_failure "continue", or did not fit)
        ("{{input}}", ["b", "c"], ("c",), False),
        ("{{input}}", ["c"], (), False),
        # the template reads an ancestor that is not a parent, or every upstream output
        ("{{nodes.A}} {{input}}", ["c"], ("c",), False),
        ("{{nodes}}", ["c"], ("c",), False),
        ("{{#nodes}}{{C}}{{/nodes}}", ["c"], ("c",), False),
        # a template that does not parse: the attempt fails on it, the way the Query path says
        ("{{#input}}", ["c"], ("c",), False),
        # a root has no parent to carry anything
        ("{{input}}", [], (), False),
    ],
)
def test_carried_outputs_suffice_only_when_they_are_all_the_attempt_reads(
    template: str, parents: list[str], outputs: tuple[str, ...], suffices: bool
) -> None:
    assert carried_suffices(node(template, parents), carried(*outputs)) is suffices


def test_nothing_carried_never_suffices() -> None:
    assert carried_suffices(node("{{input}}", ["c"]), None) is False
