"""Where a webhook may go: the rules a ``callback_url`` is checked against (docs/security.md).

A callback URL is chosen by a tenant and fetched by relayflow's sender, from inside the account's
network: without rules it reaches the instance metadata service, the local network or the sender's
own host (SSRF). So a callback URL must be

* ``http`` or ``https``, at most :data:`MAX_CALLBACK_URL_LENGTH` characters, with no spaces or
  control characters;
* without credentials (``user:password@``), with a valid host name and a port from 1 to 65535;
* not an IP literal (in any form ``inet_aton`` reads: ``0x7f000001``, ``2130706433``,
  ``0177.0.0.1``, ``127.1``) or a ``localhost`` name that is not a public address: loopback,
  private, shared, link-local, reserved, unspecified or multicast addresses are refused, and so
  is an IPv6 address embedding such an IPv4 one (mapped, compatible, 6to4, Teredo,
  NAT64).

These checks are static (``callback_url_problem``), made when the URL is set and again before each
attempt; the sender also resolves the name and refuses any non-public address it resolves to
(``is_public_address``), then connects to that vetted address (services/webhooks.py). A deployment
may allow private addresses (the local stack's tests deliver to 127.0.0.1): ``allow_private``.
Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import SplitResult, urlsplit

# The longest callback URL: the request schemas' limit, checked again on a stored URL.
from relayflow_runtime.schemas.api import MAX_URL_LENGTH as MAX_CALLBACK_URL_LENGTH

SCHEMES = ("http", "https")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_EMBEDDING = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("::/96"))
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")
_UNSAFE = re.compile(r"[\x00-\x20\x7f]")


class CallbackUrl:
    """A callback URL that passed the static checks: its scheme, host (``idna``, lower case), port
    and, when the host is an IP literal, its address."""

    def __init__(self, url: str, parts: SplitResult, host: str, port: int, address: IPAddress | None):
        self.url = url
        self.scheme = parts.scheme.lower()
        self.host = host
        self.port = port
        self.address = address


def is_public_address(address: IPAddress) -> bool:
    """A globally routable unicast address: not loopback, private, shared (100.64/10), link-local,
    reserved, unspecified, documentation or multicast, IPv4-mapped and 6to4/Teredo forms included."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo[1] if address.teredo else None)
        if embedded is None and any(address in net for net in _EMBEDDING):  # NAT64, IPv4-compatible
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None and not is_public_address(embedded):
            return False
    return bool(address.is_global) and not address.is_multicast


def ip_literal(host: str) -> IPAddress | None:
    """The address a host names literally: IPv6 (``::1``), dotted IPv4, or any other form the
    C library's ``inet_aton`` (and so the socket layer) reads as IPv4: ``0x7f000001``,
    ``2130706433``, ``0177.0.0.1``, ``127.1``. None: a name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if not re.fullmatch(r"[0-9A-Fa-fXx.]+", host):
        return None  # a name (inet_aton would also read "127.1 junk": never a host here)
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def parse_callback_url(url: str, *, allow_private: bool = False) -> tuple[CallbackUrl | None, str | None]:
    """(the parsed URL, None) when ``url`` may be a callback URL, else (None, a sentence saying
    why). Never raises."""
    if not isinstance(url, str) or not url:
        return None, "callback_url must be an http(s) URL."
    if len(url) > MAX_CALLBACK_URL_LENGTH:
        return None, f"callback_url is longer than {MAX_CALLBACK_URL_LENGTH} characters."
    if _UNSAFE.search(url):
        return None, "callback_url must not contain spaces or control characters."
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return None, f"callback_url is not a valid URL ({exc}); use https://host[:port]/path."
    if parts.scheme.lower() not in SCHEMES:
        return None, (
            f"callback_url must use http or https, not {parts.scheme or 'no scheme'!r}; "
            "e.g. https://hooks.example.com/relayflow."
        )
    if "@" in parts.netloc:
        return None, (
            "callback_url must not carry credentials (user:password@); a receiver checks the "
            "X-Relayflow-Signature header instead."
        )
    host = parts.hostname or ""
    if not host:
        return None, "callback_url has no host; use https://host[:port]/path."
    if port == 0:
        return None, "callback_url's port must be between 1 and 65535."
    port = port or (443 if parts.scheme.lower() == "https" else 80)
    address = ip_literal(host)
    if address is None:
        try:
            host = host.encode("idna").decode("ascii").lower()
        except UnicodeError:
            return None, f"callback_url's host {host!r} is not a valid host name."
        labels = host.rstrip(".").split(".")
        if len(host) > 253 or not all(_LABEL.match(label) for label in labels):
            return None, f"callback_url's host {host!r} is not a valid host name."
        if labels[-1] == "localhost" and not allow_private:
            return None, not_public(host)
    elif not allow_private and not is_public_address(address):
        return None, not_public(host)
    return CallbackUrl(url, parts, host, port, address), None


def callback_url_problem(url: str, *, allow_private: bool = False) -> str | None:
    """None when ``url`` may be a callback URL, else a sentence saying why not."""
    return parse_callback_url(url, allow_private=allow_private)[1]


def not_public(host: str) -> str:
    return (
        f"callback_url's host {host!r} is not a public address (loopback, private, link-local, reserved "
        "and multicast addresses are refused); webhooks go to a public http(s) endpoint."
    )
