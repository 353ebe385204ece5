"""The webhook sender connects to the address it vetted: the name is resolved once, by the check,
and the connection goes to that address with the URL's host in the Host header (no second lookup a
rebinding DNS server could answer differently)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from tests.support.receiver import Receiver, receiving

from relayflow_runtime.domain.urls import parse_callback_url
from relayflow_runtime.services import webhooks
from relayflow_runtime.settings import get_settings


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as state:
        yield state


def test_the_sender_resolves_once_and_connects_to_the_vetted_address(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given private addresses allowed (to reach 127.0.0.1), and a DNS that answers 127.0.0.1 for a
    # name once, then an address nothing listens on
    port = receiver.port
    receiver.statuses.append(204)
    monkeypatch.setenv("WEBHOOK_ALLOW_PRIVATE_ADDRESSES", "true")
    get_settings.cache_clear()
    real = socket.getaddrinfo
    answers = iter(["127.0.0.1"])
    lookups: list[str] = []

    def rebinding(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "hooks.pinned.example":
            lookups.append(host)
            return real(next(answers, "192.0.2.1"), *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    target, problem = parse_callback_url(f"http://hooks.pinned.example:{port}/hook", allow_private=True)
    assert problem is None and target is not None
    try:
        # When the sender posts
        status = webhooks.http_post(target, b"{}", {"Content-Type": "application/json"}, 5.0)
    finally:
        get_settings.cache_clear()
    # Then the name was looked up once, the POST reached the first answer, with the URL's Host
    assert status == 204
    assert lookups == ["hooks.pinned.example"]
    assert [r["headers"]["Host"] for r in receiver.requests] == [f"hooks.pinned.example:{port}"]


def test_by_default_a_name_resolving_to_a_private_address_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: real("10.0.0.7", *a, **k))
    target, _ = parse_callback_url("https://hooks.example.com/x")
    assert target is not None
    with pytest.raises(webhooks.DeliveryRefused, match="not a public address"):
        webhooks.vetted_address(target, allow_private=False)
