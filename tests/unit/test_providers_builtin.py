"""The builtin models: exact outputs, failure shapes, file text extraction and word-count usage."""

from __future__ import annotations

import json
import time

import pytest

from relayflow.samples import minimal_pdf
from relayflow_runtime.providers import InvocationContext, configured_model
from relayflow_runtime.providers.base import PermanentModelError, TransientModelError, Usage
from relayflow_runtime.providers.builtin import extract_text


def run(model: str, prompt: str, ctx: InvocationContext | None = None, **config: object):
    return configured_model("builtin", {"model": model, **config}).invoke(prompt, ctx or InvocationContext())


def test_echo_returns_the_prompt_and_counts_words_as_tokens():
    # Given a three-word prompt
    # When the echo model runs
    result = run("echo", "hello big world")
    # Then the output is the prompt and usage counts whitespace words both ways
    assert result.output == "hello big world"
    assert result.usage == Usage(input_tokens=3, output_tokens=3)


def test_uppercase_and_word_count():
    # Given a prompt of five words
    prompt = "the quick brown fox jumps"
    # When uppercase and word_count run
    upper = run("uppercase", prompt)
    count = run("word_count", prompt)
    # Then they transform and count it, and word_count's one-word output is one token
    assert upper.output == "THE QUICK BROWN FOX JUMPS"
    assert count.output == "5"
    assert count.usage == Usage(input_tokens=5, output_tokens=1)


def test_summarize_keeps_the_best_scored_sentences_in_original_order():
    # Given a text where two sentences share the frequent words "cats" and "milk"
    text = (
        "Cats drink milk every morning. "
        "The weather was cloudy. "
        "Many cats prefer warm milk to cold milk. "
        "Dogs bark."
    )
    # When summarize keeps two sentences (the default)
    result = run("summarize", text)
    # Then the two cat/milk sentences come out, in the order of the text
    assert result.output == "Cats drink milk every morning. Many cats prefer warm milk to cold milk."
    # And with sentences=1 only the highest-scoring one remains
    assert run("summarize", text, sentences=1).output == "Many cats prefer warm milk to cold milk."


def test_summarize_returns_short_texts_whole():
    # Given a text of fewer sentences than asked for
    # When summarize runs
    # Then the text comes back unchanged
    assert run("summarize", "Only one sentence here.", sentences=3).output == "Only one sentence here."


@pytest.mark.parametrize(
    ("text", "label", "score"),
    [
        ("I love this product, it is great and fast", "positive", 1.0),
        ("Terrible support and a broken screen", "negative", -1.0),
        ("The box is blue", "neutral", 0.0),
        ("Great camera but awful battery and slow charging", "negative", -0.3333),
        ("This is not good", "negative", -1.0),
    ],
)
def test_sentiment_returns_label_and_score_as_json(text: str, label: str, score: float):
    # Given a review
    # When the sentiment model runs
    result = run("sentiment", text)
    # Then its output is a JSON object with the lexicon label and score
    assert json.loads(result.output) == {"label": label, "score": score}


def test_keywords_are_top_non_stopwords_by_frequency():
    # Given a text repeating some content words among stopwords
    text = "Python and AWS. Python on Lambda with AWS and Python; Lambda scales. The end."
    # When keywords runs with the default top_k and with top_k=2
    default = run("keywords", text)
    two = run("keywords", text, top_k=2)
    # Then the most frequent non-stopwords come first, ties in order of first appearance
    assert default.output == "python, aws, lambda, scales, end"
    assert two.output == "python, aws"


def test_text_extract_without_a_file_returns_the_prompt():
    # Given no input file on the context
    # When text_extract runs
    # Then it passes the prompt through
    assert run("text_extract", "plain prompt").output == "plain prompt"


def test_text_extract_reads_a_real_pdf():
    # Given an execution whose input file is a hand-built PDF with one line of text
    pdf = minimal_pdf("Quarterly revenue grew strongly")
    ctx = InvocationContext(read_input_file=lambda: pdf, input_filename="report.pdf")
    # When text_extract runs
    result = run("text_extract", "ignored", ctx)
    # Then pypdf's extraction of the page is the output
    assert result.output == "Quarterly revenue grew strongly"
    assert result.usage.output_tokens == 4


def test_text_extract_reads_utf8_text_and_refuses_binary():
    # Given a UTF-8 text file (with a BOM) and a binary file
    text_ctx = InvocationContext(read_input_file=lambda: "\ufeffnaïve café\n".encode())
    binary_ctx = InvocationContext(read_input_file=lambda: b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    # When text_extract runs on each
    # Then the text is decoded and the binary file is a permanent error
    assert run("text_extract", "", text_ctx).output == "naïve café\n"
    with pytest.raises(PermanentModelError, match="not a text or PDF file"):
        run("text_extract", "", binary_ctx)


def test_extract_text_helper_handles_pdf_text_and_broken_pdf():
    # Given PDF bytes, text bytes and bytes that claim to be a PDF but are not
    # When extract_text reads them
    # Then PDFs and text come out as text, the fake PDF is a permanent error
    assert extract_text(minimal_pdf("Hello PDF")) == "Hello PDF"
    assert extract_text(b"just text") == "just text"
    with pytest.raises(PermanentModelError):
        extract_text(b"%PDF-1.4\nthis is not really a pdf")


def test_sleep_waits_then_returns_the_prompt():
    # Given a sleep model of 50 ms
    started = time.monotonic()
    # When it runs
    result = run("sleep", "done", seconds=0.05)
    # Then it took at least that long and returned the prompt
    assert time.monotonic() - started >= 0.05
    assert result.output == "done"


def test_flaky_fails_exactly_failures_times_then_succeeds():
    # Given a flaky model configured to fail twice
    outcomes = []
    # When attempts 1..4 run
    for attempt in range(1, 5):
        try:
            outcomes.append(run("flaky", "ok", InvocationContext(attempt=attempt), failures=2).output)
        except TransientModelError:
            outcomes.append("transient")
    # Then the first two attempts fail transiently and the rest succeed
    assert outcomes == ["transient", "transient", "ok", "ok"]
    # And the default is one failure
    with pytest.raises(TransientModelError):
        run("flaky", "ok", InvocationContext(attempt=1))
    assert run("flaky", "ok", InvocationContext(attempt=2)).output == "ok"


def test_flaky_permanent_and_fail_raise_non_retried_errors():
    # Given the permanent flaky model and the fail model
    # When they run, on any attempt
    # Then they raise PermanentModelError (the fail model with its configured or default message)
    with pytest.raises(PermanentModelError):
        run("flaky", "x", InvocationContext(attempt=9), permanent=True)
    with pytest.raises(PermanentModelError, match=r"^builtin fail model always fails$"):
        run("fail", "x")
    with pytest.raises(PermanentModelError, match=r"^boom$"):
        run("fail", "x", message="boom")


def test_unknown_builtin_model_is_permanent():
    # Given a builtin model name that does not exist
    # When it is invoked
    # Then the call fails permanently, naming the model
    with pytest.raises(PermanentModelError, match="nope"):
        run("nope", "x")
