"""A PDF's text is read within a CPU and a wall-clock budget (providers/pdf.py): a small PDF whose
content stream inflates to hundreds of thousands of text operators (what made a 117 KB PDF take
minutes of CPU) is a clear permanent error once the budget is spent, never minutes of CPU."""

from __future__ import annotations

import pytest
from tests.support.pdfs import costly_pdf

from relayflow.samples import minimal_pdf
from relayflow_runtime.providers.base import PermanentModelError
from relayflow_runtime.providers.builtin import extract_text


def test_a_pdf_over_its_cpu_budget_is_a_permanent_error_at_the_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a budget of 1 s of CPU (20 by default), and a 6 KB PDF that takes ~13 s to read
    monkeypatch.setenv("PDF_CPU_SECONDS", "1")
    data = costly_pdf()
    assert len(data) < 10_000
    # When its text is extracted
    with pytest.raises(PermanentModelError) as info:
        extract_text(data)
    # Then the child is stopped by its CPU limit (this message is only for SIGXCPU/SIGKILL), with an
    # error that says so and what to do
    assert "within its budget of 1 s of CPU" in str(info.value)
    assert "split it or send its text" in str(info.value)


def test_a_pdf_over_its_wall_clock_budget_is_a_permanent_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PDF_CPU_SECONDS", "30")
    monkeypatch.setenv("PDF_WALL_SECONDS", "1")
    with pytest.raises(PermanentModelError, match="within 1 s"):
        extract_text(costly_pdf())


def test_an_ordinary_pdf_is_read_in_the_child_process_and_a_broken_one_says_why() -> None:
    assert extract_text(minimal_pdf(["first line", "second line"])) == "first line\nsecond line"
    with pytest.raises(PermanentModelError, match="could not read the PDF file"):
        extract_text(b"%PDF-1.4\nthis is not really a pdf")
