"""The embedded local stack: template.yaml on moto in this process, no AWS account, no Docker.

* `relayflow.local.stack.LocalStack` starts the pieces below on moto and stops them.
* `relayflow.local.provision` builds the template's resources in moto and sets the environment.
* `relayflow.local.apigateway` does API Gateway's part of a request (routes, Lambda authorizer).
* `relayflow.local.eventbridge` runs the functions' rules moto does not (Step Functions status
  changes, bus events to functions), matched by moto's own event-pattern matcher.
* `relayflow.local.delivery` invokes functions as Lambda does for asynchronous callers, SQS event
  sources and schedules.
* `relayflow.local.server` serves the HTTP API on 127.0.0.1 (API Gateway payload format 2.0).
* `relayflow.local.moto_shim` installs `relayflow.local.shims` (one module per AWS service whose
  moto internals it patches: lambda_, dynamodb, stepfunctions, stepfunctions_map, s3, kms), the
  only code that touches moto's internals.
* `relayflow.local.cfn` reads CloudFormation YAML and resolves its intrinsic functions.

Nothing here is imported by the Lambda handlers; moto and PyYAML are the `local` extra.
"""
