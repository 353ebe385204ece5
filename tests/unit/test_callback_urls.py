"""The callback URL rules (domain/urls.py), address by address: what a webhook may never reach."""

from __future__ import annotations

import pytest

from relayflow_runtime.domain.urls import callback_url_problem, parse_callback_url

NOT_PUBLIC = [
    "http://127.0.0.1/",
    "http://127.1/",
    "http://0x7f000001/",
    "http://0x7f.0.0.1/",
    "http://2130706433/",
    "http://0177.0.0.1/",
    "http://0/",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.1/",
    "http://172.31.255.255/",
    "http://192.168.0.10:8080/",
    "http://100.64.0.1/",
    "http://198.18.0.1/",
    "http://224.0.0.1/",
    "http://255.255.255.255/",
    "http://localhost/",
    "http://api.localhost/",
    "http://[::1]/",
    "http://[::]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::7f00:1]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[2002:7f00:1::]/",
    "http://[fc00::1]/",
    "http://[fe80::1]/",
    "http://[ff02::1]/",
]
MALFORMED = [
    ("file:///etc/passwd", "must use http or https"),
    ("gopher://example.com/", "must use http or https"),
    ("javascript:alert(1)", "must use http or https"),
    ("ftp://example.com/", "must use http or https"),
    ("//example.com/", "must use http or https"),
    ("http://user:pw@example.com/", "must not carry credentials"),
    ("http://user@example.com/", "must not carry credentials"),
    ("http://[::1/x", "is not a valid URL"),
    ("http://example.com:99999/", "is not a valid URL"),
    ("http://example.com:0/", "port must be between 1 and 65535"),
    ("http:///path", "has no host"),
    ("http://exa mple.com/", "spaces or control characters"),
    ("http://example.com/\r\nX: y", "spaces or control characters"),
    ("http://-bad-.example/", "not a valid host name"),
    ("http://a_b%25.example/", "not a valid host name"),
    ("http://" + "a" * 64 + ".example/", "not a valid host name"),
    ("https://example.com/" + "x" * 2000, "longer than 2000 characters"),
]
PUBLIC = [
    "https://hooks.example.com/relayflow",
    "HTTPS://Hooks.Example.COM:8443/x?y=1",
    "http://8.8.8.8/",
    "http://[2001:4860:4860::8888]:8080/",
    "https://bücher.example/hook",
]


@pytest.mark.parametrize("url", NOT_PUBLIC)
def test_an_address_that_is_not_public_is_refused_unless_allowed(url: str) -> None:
    problem = callback_url_problem(url)
    assert problem is not None and "is not a public address" in problem
    assert callback_url_problem(url, allow_private=True) is None


@pytest.mark.parametrize(("url", "reason"), MALFORMED)
def test_a_malformed_url_is_refused_with_its_reason_and_never_raises(url: str, reason: str) -> None:
    for allow_private in (False, True):
        problem = callback_url_problem(url, allow_private=allow_private)
        assert problem is not None and reason in problem, problem


@pytest.mark.parametrize("url", PUBLIC)
def test_a_public_http_url_is_accepted(url: str) -> None:
    target, problem = parse_callback_url(url)
    assert problem is None and target is not None
    assert target.scheme in ("http", "https") and target.port > 0
