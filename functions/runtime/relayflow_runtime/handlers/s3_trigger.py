"""S3 ObjectCreated under inputs/: each uploaded file starts one run (see services/uploads.py)."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import S3Event
from aws_lambda_powertools.utilities.typing import LambdaContext

from relayflow_runtime.services import uploads

logger = Logger()
tracer = Tracer()
metrics = Metrics()


class UploadsNotFinished(Exception):
    """Some records of this event must be tried again (Lambda retries the whole event; the records
    that were handled are recognised as duplicates then)."""


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    unfinished: list[str] = []
    for record in S3Event(event).records:
        s3 = record.s3
        key = unquote_plus(s3.get_object.key)  # S3 sends keys URL-encoded
        try:
            result = uploads.handle_upload(
                s3.bucket.name, key, s3.get_object.etag or "", s3.get_object.version_id
            )
        except uploads.UploadInProgress as exc:
            logger.info("upload is being started by another delivery", extra={"key": key, "why": str(exc)})
            unfinished.append(key)
            continue
        except Exception:
            logger.exception("could not handle the upload", extra={"key": key})
            unfinished.append(key)
            continue
        metrics.add_metric(name=f"Uploads_{result.outcome}", unit=MetricUnit.Count, value=1)
        results.append(
            {
                "key": result.key,
                "outcome": result.outcome,
                "execution_id": result.execution_id,
                "workflow_id": result.workflow_id,
                "reason": result.reason,
            }
        )
    if unfinished:
        raise UploadsNotFinished(f"to be retried: {', '.join(unfinished)}")
    return {"results": results}
