"""A number in a request is JSON's: 2.0 is the integer 2, and true/false is no number (Python
would take it for 1/0). Found by schemathesis: PATCH config {"max_retries": false} was 0."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from relayflow_runtime.schemas.api import CreateVersion, Execute, UpdateVersion
from relayflow_runtime.schemas.dataset_api import RetryFailed


@pytest.mark.parametrize(
    ("model", "body"),
    [
        (UpdateVersion, {"config": {"max_retries": False}}),
        (CreateVersion, {"config": {"node_timeout": True}}),
        (Execute, {"single_input": "x", "timeout": True}),
        (RetryFailed, {"parallelism": True}),
    ],
)
def test_a_boolean_is_not_a_number(model: type, body: dict) -> None:
    with pytest.raises(ValidationError, match="not true or false"):
        model.model_validate(body)


def test_a_whole_float_is_an_integer() -> None:
    patch = UpdateVersion.model_validate({"config": {"max_retries": 2.0}})
    assert patch.config.max_retries == 2 and isinstance(patch.config.max_retries, int)
    with pytest.raises(ValidationError):
        UpdateVersion.model_validate({"config": {"max_retries": 2.5}})
