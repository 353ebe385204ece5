"""The dashboard's vendored layout library: the file served is the one its note names (version,
sha256), the Makefile refreshes that version, and the API serves it as JavaScript from its own
origin."""

from __future__ import annotations

import hashlib
import re
from importlib import resources
from pathlib import Path

from relayflow_runtime.handlers.routes import dashboard

ROOT = Path(__file__).resolve().parents[2]
STATIC = resources.files("relayflow_runtime").joinpath("static")


def test_the_vendored_dagre_is_the_version_and_file_its_note_and_the_makefile_name() -> None:
    # Given the note, the Makefile and the vendored file
    note = STATIC.joinpath("VENDORED.md").read_text(encoding="utf-8")
    row = re.search(r"\| `dagre\.min\.js` \|[^|]*\| (\S+) \| MIT[^|]*\| `([0-9a-f]{64})` \|", note)
    assert row, "static/VENDORED.md has no row for dagre.min.js"
    version, sha256 = row.groups()
    bundle = STATIC.joinpath("dagre.min.js").read_bytes()
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")

    # Then they agree: the file's hash, its own version string, the Makefile's pin, the licence beside it
    assert hashlib.sha256(bundle).hexdigest() == sha256
    assert f're="{version}"'.encode() in bundle
    assert re.search(rf"^DAGRE_VERSION := {re.escape(version)}$", makefile, re.M)
    assert "Permission is hereby granted" in STATIC.joinpath("dagre.LICENSE.txt").read_text(encoding="utf-8")


def test_the_api_serves_the_layout_library_as_javascript_under_the_pages_policy() -> None:
    # When the page's script asks for the library
    answer = dashboard.dashboard_asset("dagre.min.js")

    # Then it is JavaScript, served with the same headers as the page (no other origin allowed)
    assert answer.content_type.startswith("text/javascript")
    assert answer.status_code == 200
    assert "script-src 'self'" in answer.headers["Content-Security-Policy"]
    assert "dagre" in answer.body
