"""Sample inputs for the demo, the benchmarks and the tests (no files to ship or download)."""

from __future__ import annotations

SAMPLE_TEXT = (
    "Relayflow runs AI workflows on Step Functions. Each node calls a model and records its prompt, "
    "output and duration. Teams love how every run can be watched as it happens. Failures are retried "
    "with exponential backoff, and a node may continue on failure. The terrible old glue code is gone."
)

SAMPLE_PDF_LINES = (
    "Quarterly report: revenue grew strongly in every region.",
    "Customers praised the excellent support and the fast onboarding.",
    "Costs fell because batch processing replaced manual review.",
    "The team plans to expand the workflow engine next quarter.",
)


def _escape(line: str) -> bytes:
    return line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)").encode("latin-1")


def minimal_pdf(text: str | tuple[str, ...] | list[str]) -> bytes:
    """A valid one-page PDF 1.4 drawing each line of text in Helvetica, with a correct xref table."""
    lines = [text] if isinstance(text, str) else list(text)
    drawn = b" ".join(b"(" + _escape(line) + b") Tj T*" for line in lines)
    stream = b"BT /F1 12 Tf 14 TL 72 720 Td " + drawn + b" ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += str(number).encode() + b" 0 obj\n" + body + b"\nendobj\n"
    xref_at = len(out)
    out += b"xref\n0 " + str(len(objects) + 1).encode() + b"\n0000000000 65535 f \n"
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size " + str(len(objects) + 1).encode() + b" /Root 1 0 R >>\n"
    out += b"startxref\n" + str(xref_at).encode() + b"\n%%EOF\n"
    return bytes(out)
