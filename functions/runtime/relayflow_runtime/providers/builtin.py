"""Deterministic local models, selected by ``config["model"]``: no network, no AWS, no keys.

They make every workflow runnable on a laptop and give the tests exact outputs, including the
failure shapes (``flaky`` for retried errors, ``fail`` for non-retried ones, ``sleep`` for timeouts).
"""

from __future__ import annotations

import io
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from relayflow_runtime.providers.base import (
    InvocationContext,
    ModelResult,
    PermanentModelError,
    TransientModelError,
    approximate_usage,
)

DEFAULT_FAIL_MESSAGE = "builtin fail model always fails"


def _word_set(text: str) -> frozenset[str]:
    return frozenset(text.split())


STOPWORDS = _word_set(
    """
    a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has
    have having he her here hers herself him himself his how i if in into is it its itself just me
    more most my myself no nor not now of off on once only or other our ours ourselves out over own
    same she should so some such than that the their theirs them themselves then there these they
    this those through to too under until up very was we were what when where which while who whom
    why will with would you your yours yourself yourselves also may might must shall us let get got
    s t don isn wasn aren weren won doesn didn it's i'm i've you're we're they're that's there's
    """
)

POSITIVE_WORDS = _word_set(
    """
    good great excellent amazing awesome fantastic wonderful love loved loves lovely like liked
    enjoy enjoyed happy glad pleased delighted best better nice perfect superb brilliant positive
    recommend recommended fast helpful easy beautiful fine success successful win wins won works
    impressive outstanding satisfied reliable friendly clean smooth favorite favourite
    """
)

NEGATIVE_WORDS = _word_set(
    """
    bad terrible awful horrible poor worst worse hate hated hates dislike disliked sad angry upset
    disappointed disappointing disappointment slow broken bug bugs buggy fail fails failed failure
    problem problems issue issues wrong ugly useless difficult hard negative annoying expensive
    crash crashes crashed error errors refund unhappy unreliable dirty rude late missing
    """
)

NEGATIONS = frozenset({"not", "no", "never", "isn't", "wasn't", "don't", "doesn't", "didn't", "hardly"})

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _content_words(text: str) -> list[str]:
    return [w for w in _words(text) if w not in STOPWORDS and len(w) > 1]


# --- The models ------------------------------------------------------------------------------------


def _echo(config: Mapping[str, Any], prompt: str, ctx: InvocationContext) -> str:
    return prompt


def _uppercase(config: Mapping[str, Any], prompt: str, ctx: InvocationContext) -> str:
    return prompt.upper()


def _word_count(config: Mapping[str, Any], prompt: str, ctx: InvocationContext) -> str:
    return str(len(prompt.split()))


def summarize(text: str, sentences: int = 2) -> str:
    """Extractive summary: the ``sentences`` best sentences by word-frequency score, in text order.

    A sentence scores the sum of the document frequencies of its content words (stopwords ignored);
    ties go to the earlier sentence.
    """
    parts = [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]
    if len(parts) <= sentences:
        return " ".join(parts)
    frequency = Counter(_content_words(text))
    scores = [sum(frequency[w] for w in _content_words(s)) for s in parts]
    best = sorted(range(len(parts)), key=lambda i: (-scores[i], i))[:sentences]
    return " ".join(parts[i] for i in sorted(best))


def _summarize(config: Mapping[str, Any], prompt: str, ctx: InvocationContext) -> str:
    return summarize(prompt, int(config.get("sentences", 2)))


def sentiment(text: str) -> dict[str, Any]:
    """Lexicon sentiment: score = (positive - negative) / (positive + negative), in [-1, 1].

    A negation among the two words before a sentiment word flips it ("not good" counts negative).
    """
    words = _words(text)
    positive = negative = 0
    for i, word in enumerate(words):
        polarity = 1 if word in POSITIVE_WORDS else -1 if word in NEGATIVE_WORDS else 0
        if not polarity:
            continue
        if any(w in NEGATIONS for w in words[max(0, i - 2) : i]):
            polarity = -polarity
        if polarity > 0:
            positive += 1
        else:
            negative += 1
    hits = positive + negative
    score = round((positive - negative) / hits, 4) if hits else 0.0
    label = "positive" if score > 0 else "negative" if score < 0 else "neutral"
    return {"label": label, "score": score}


def _sentiment(config: Mapping[str, Any], prompt: str, ctx: InvocationContext) -> str:
    return json.dumps(sentiment(prompt))


def keywords(text: str, top_k: int = 5) -> list[str]:
    """The ``top_k`` most frequent content words; ties go to the word seen first."""
    words = _content_words(text)
    first_seen: dict[str, int] = {}
    for i, word in enumerate(words):
        first_seen.setdefault(word, i)
    counts = Counter(words)
    return sorted(counts, key=lambda w: (-counts[w], first_seen[w]))[:top_k]


def _keywords(config: Mapping[str, Any], prompt: str, ctx: InvocationContext) -> str:
    return ", ".join(keywords(prompt, int(config.get("top_k", 5))))


def extract_text(data: bytes) -> str:
    """The text of an input file: a PDF (detected by its ``%PDF-`` magic) or UTF-8 text.

    Raises ``PermanentModelError`` for anything else, or for a PDF that cannot be read.
    """
    # Leading whitespace before the header is tolerated, as PDF readers do.
    if data[:1024].lstrip().startswith(b"%PDF-"):
        return _pdf_text(data)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise PermanentModelError("not a text or PDF file") from None
    if "\x00" in text:
        raise PermanentModelError("not a text or PDF file")
    return text


def _pdf_text(data: bytes) -> str:
    from pypdf import PdfReader  # imported here: only PDF inputs pay for it on a cold start
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
        raise PermanentModelError(f"could not read the PDF file: {exc}") from exc
    return "\n".join(p.strip() for p in pages if p.strip())


def _text_extract(config: Mapping[str, Any], prompt: str, ctx: InvocationContext) -> str:
    if ctx.read_input_file is None:
        return prompt
    return extract_text(ctx.read_input_file())


def _sleep(config: Mapping[str, Any], prompt: str, ctx: InvocationContext) -> str:
    time.sleep(float(config.get("seconds", 1)))
    return prompt


def _flaky(config: Mapping[str, Any], prompt: str, ctx: InvocationContext) -> str:
    if config.get("permanent"):
        raise PermanentModelError(f"builtin flaky model fails permanently (attempt {ctx.attempt})")
    failures = int(config.get("failures", 1))
    if ctx.attempt <= failures:
        raise TransientModelError(f"builtin flaky model: attempt {ctx.attempt} of {failures} failing")
    return prompt


def _fail(config: Mapping[str, Any], prompt: str, ctx: InvocationContext) -> str:
    raise PermanentModelError(str(config.get("message", DEFAULT_FAIL_MESSAGE)))


ModelFn = Callable[[Mapping[str, Any], str, InvocationContext], str]

MODELS: dict[str, ModelFn] = {
    "echo": _echo,
    "uppercase": _uppercase,
    "word_count": _word_count,
    "summarize": _summarize,
    "sentiment": _sentiment,
    "keywords": _keywords,
    "text_extract": _text_extract,
    "sleep": _sleep,
    "flaky": _flaky,
    "fail": _fail,
}


# --- The adapter interface ---------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _when(model: str, properties: dict[str, Any]) -> dict[str, Any]:
    return {"if": {"properties": {"model": {"const": model}}}, "then": {"properties": properties}}


#: What validate() accepts, as JSON Schema (the OpenAPI document's schema of a builtin config).
CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["model"],
    "properties": {"model": {"enum": list(MODELS), "description": "Which builtin model."}},
    "allOf": [
        _when("summarize", {"sentences": {"type": "integer", "minimum": 1}}),
        _when("keywords", {"top_k": {"type": "integer", "minimum": 1}}),
        _when("sleep", {"seconds": {"type": "number", "minimum": 0}}),
        _when("flaky", {"failures": {"type": "integer", "minimum": 0}, "permanent": {"type": "boolean"}}),
        _when("fail", {"message": {"type": "string"}}),
    ],
}


def validate(config: Mapping[str, Any]) -> list[str]:
    model = config.get("model")
    if not isinstance(model, str) or not model:
        return [f"builtin: 'model' is required, one of: {', '.join(MODELS)}"]
    if model not in MODELS:
        return [f"builtin: unknown model {model!r}; expected one of: {', '.join(MODELS)}"]
    problems: list[str] = []
    positive_ints = {"summarize": "sentences", "keywords": "top_k"}
    if model in positive_ints:
        key = positive_ints[model]
        if key in config and not (_is_int(config[key]) and config[key] >= 1):
            problems.append(f"builtin {model}: '{key}' must be a whole number >= 1")
    if (
        model == "sleep"
        and "seconds" in config
        and not (_is_number(config["seconds"]) and config["seconds"] >= 0)
    ):
        problems.append("builtin sleep: 'seconds' must be a number >= 0")
    if model == "flaky":
        if "failures" in config and not (_is_int(config["failures"]) and config["failures"] >= 0):
            problems.append("builtin flaky: 'failures' must be a whole number >= 0")
        if "permanent" in config and not isinstance(config["permanent"], bool):
            problems.append("builtin flaky: 'permanent' must be true or false")
    if model == "fail" and "message" in config and not isinstance(config["message"], str):
        problems.append("builtin fail: 'message' must be a string")
    return problems


def invoke(config: Mapping[str, Any], prompt: str, ctx: InvocationContext) -> ModelResult:
    model = MODELS.get(str(config.get("model")))
    if model is None:
        raise PermanentModelError(f"builtin: unknown model {config.get('model')!r}")
    output = model(config, prompt, ctx)
    return ModelResult(output=output, usage=approximate_usage(prompt, output))
