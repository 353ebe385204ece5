"""KMS: symmetric keys of one process share one RSA key (generating one per key is slow)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from relayflow.local.shims.base import patch_optional

_KMS_MODELS = "moto.kms.models"
_SYMMETRIC_KEY_SPEC = "SYMMETRIC_DEFAULT"
_symmetric_rsa: list[Any] = []  # the RSA key every symmetric KMS key of the process holds
_symmetric_rsa_lock = threading.Lock()


def _symmetric_keys_share_rsa(generate: Callable[[str], Any]) -> Callable[[str], Any]:
    """moto gives every KMS key an RSA-2048 private key, a symmetric key too (which signs nothing):
    ~60 ms of CPU for the default SSE key of each table, at every stack start. Symmetric keys
    share one; asymmetric keys keep their own."""

    @functools.wraps(generate)
    def generate_private_key(key_spec: str) -> Any:
        if key_spec != _SYMMETRIC_KEY_SPEC:
            return generate(key_spec)
        with _symmetric_rsa_lock:
            if not _symmetric_rsa:
                _symmetric_rsa.append(generate(key_spec))
            return _symmetric_rsa[0]

    return generate_private_key


def install() -> None:
    """KMS: symmetric keys share one RSA key per process."""
    patch_optional(_KMS_MODELS, "generate_private_key", _symmetric_keys_share_rsa)
