"""The one place that touches moto's internals: `install()` applies the patches of
`relayflow.local.shims` (one module per AWS service patched) and `uninstall()` removes them; the
names the local stack uses are re-exported here.

moto runs a Lambda function by starting a Docker container (`LambdaFunction._invoke_lambda`).
Here that private method is replaced with an in-process call of the function's own handler, so
Step Functions Task states, S3 notifications and `lambda.invoke` all run relayflow's real handlers
without Docker. An exception becomes a Lambda error payload whose `errorType` is the exception's
class name, which Step Functions uses as the error name: Retry / Catch on `["MyError"]` behave as
on AWS.

Also here, because they patch moto too:
* a Task state's Lambda call goes straight to moto's Lambda backend (the function, its error
  header, its payload as Lambda returns it) instead of through a boto3 client, botocore and moto's
  HTTP layer: the round trip cost more than the rest of a local Task; the boto3 Lambda client the
  interpreter builds for other calls is cached;
* S3 notification events get the fields AWS sends and moto leaves out (userIdentity,
  requestParameters, responseElements, ownerIdentity, sequencer, versionId) and AWS's key
  encoding (`quote_plus` keeping `/`; moto also encodes the slashes);
* the interpreter's logger, which logs every (expected) task failure at ERROR, is quieted;
* a state machine definition is parsed (antlr) once per text, not once per execution;
* Invoke's own errors (429, 500) reach a Task as AWS names them, ``Lambda.<Code>``, whether its
  Resource is ``arn:aws:states:::lambda:invoke`` or the function's ARN (moto: ``Exception``);
* JSONPath expressions the interpreter (and EventBridge's target input) evaluates are parsed
  once, not on every use (jsonpath-ng builds a new parser, tables and all, per parse: a fifth of
  the interpreter's time per item);
* a Query does not sort the whole table first: a base-table Query reads its partition only, an
  index Query every item unsorted (moto sorted every item of the table for each Query: seconds
  with 100,000 stored items);
* DynamoDB update expressions are parsed once (moto parses each twice per UpdateItem; the parsed
  tree is only read, and copied before it is filled in), and so are condition expressions with the
  same names and values (moto parses each twice per conditional write; its trees only evaluate);
* a distributed Map's worker runs its items in a loop: moto's calls itself once per item, so a
  worker with more than ~900 items (a large batch at low parallelism) died of RecursionError;
* DynamoDB item operations answer with `json.dumps` of moto's result, which is already in
  DynamoDB's wire shape, instead of moto's serializer walking the botocore model attribute by
  attribute (a Query of 200 items spent ~70% of its time there); anything json cannot write
  (a table description's dates) still goes through moto's serializer;
* the interpreter's list of every thread it ever started (`TMP_THREADS`: one per Task state run,
  never read, never emptied: tens of thousands in a large batch) keeps only threads still alive;
* a succeeded execution's output is set before its status, so no reader sees one without the other;
* an execution that ends tells the listeners of `on_execution_end` (Step Functions' status-change
  event; moto has none), so the local stack need not poll for it.

moto is pinned to `>=5.2.3,<5.3`; `check_compatible()` fails loudly if the private method moved.
"""

from __future__ import annotations

import logging
import threading

__all__ = [
    "MOTO_INVOKE_SIGNATURE",
    "DistributedMapSpec",
    "FunctionInfo",
    "HandlerNotFoundError",
    "LambdaContext",
    "MotoIncompatibleError",
    "check_compatible",
    "dispatch",
    "install",
    "invoke_payload",
    "is_installed",
    "moto_invoke_lambda",
    "on_execution_end",
    "on_s3_lambda_notification",
    "override",
    "register",
    "resolve_handler",
    "run_child_program",
    "uninstall",
    "unregister",
]

from relayflow.local.shims import base, dynamodb, kms, lambda_, s3, stepfunctions, stepfunctions_map
from relayflow.local.shims.base import MOTO_INVOKE_SIGNATURE, MotoIncompatibleError
from relayflow.local.shims.dynamodb import _dynamodb_lock as _dynamodb_lock  # bench/ holds it
from relayflow.local.shims.lambda_ import (
    FunctionInfo,
    HandlerNotFoundError,
    LambdaContext,
    check_compatible,
    dispatch,
    invoke_payload,
    moto_invoke_lambda,
    override,
    register,
    resolve_handler,
    unregister,
)
from relayflow.local.shims.s3 import on_s3_lambda_notification
from relayflow.local.shims.stepfunctions import on_execution_end
from relayflow.local.shims.stepfunctions_map import DistributedMapSpec, run_child_program

_SFN_LOGGER = "moto.stepfunctions.parser"

_install_count = 0
_install_lock = threading.RLock()
_sfn_logger_level: int | None = None


def install() -> None:
    """Patch moto (idempotent, reference-counted: each install() needs one uninstall())."""
    global _install_count, _sfn_logger_level
    with _install_lock:
        _install_count += 1
        if _install_count > 1:
            return
        try:
            lambda_.install()  # first: it checks that moto is the version the shims know
            dynamodb.install()
            stepfunctions.install()
            stepfunctions_map.install()
            s3.install()
            kms.install()
        except BaseException:
            _install_count -= 1
            _restore()
            raise
        sfn_logger = logging.getLogger(_SFN_LOGGER)
        _sfn_logger_level = sfn_logger.level
        sfn_logger.setLevel(logging.CRITICAL)


def uninstall() -> None:
    global _install_count, _sfn_logger_level
    with _install_lock:
        if _install_count == 0:
            return
        _install_count -= 1
        if _install_count:
            return
        _restore()
        if _sfn_logger_level is not None:
            logging.getLogger(_SFN_LOGGER).setLevel(_sfn_logger_level)
            _sfn_logger_level = None


def _restore() -> None:
    """Undo every patch (last patched first) and drop the cached clients."""
    base._restore()
    stepfunctions.clear_client_cache()


def is_installed() -> bool:
    return _install_count > 0
