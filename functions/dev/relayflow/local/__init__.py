"""The embedded local stack: template.yaml on moto in this process, no AWS account, no Docker.

* `relayflow.local.stack.LocalStack` builds the template's resources in moto and wires the events
  moto does not run (Step Functions status changes, the HTTP API's routes and authorizer).
* `relayflow.local.server` serves the HTTP API on 127.0.0.1 (API Gateway payload format 2.0).
* `relayflow.local.moto_shim` is the one module that touches moto's internals.
* `relayflow.local.cfn` reads CloudFormation YAML and resolves its intrinsic functions.

Nothing here is imported by the Lambda handlers; moto and PyYAML are the `local` extra.
"""
