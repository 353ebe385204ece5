"""relayflow's runtime: the code every Lambda function ships (template.yaml's CodeUri).

Layers, outermost first (import-linter checks them in `make lint`, pyproject.toml): handlers ->
services -> providers (model adapters) | settings -> adapters (the only boto3 code) -> domain
(pure) -> schemas -> errors.
The development package `relayflow` (client, CLI, demo, local stack) lives beside it in
functions/dev and is never shipped.
"""

__version__ = "0.1.0"
