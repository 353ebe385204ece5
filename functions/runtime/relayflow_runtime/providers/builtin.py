"""Deterministic local models, selected by ``config["model"]``: no network, no AWS, no keys.

They make every workflow runnable on a laptop and give the tests exact outputs, including the
failure shapes (``flaky`` for retried errors, ``fail`` for non-retried ones, ``sleep`` for timeouts).
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, TypedDict

from pydantic import MISSING, ConfigDict, Field, model_validator

from relayflow_runtime.domain.text import storable
from relayflow_runtime.providers.base import (
    Adapter,
    InvocationContext,
    ModelResult,
    PermanentModelError,
    TransientModelError,
    approximate_usage,
)
from relayflow_runtime.providers.config import ModelConfig, or_default, refuse_inline_secrets
from relayflow_runtime.providers.pdf import pdf_text
from relayflow_runtime.schemas.entities import MAX_NODE_TIMEOUT_SECONDS

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


def _echo(config: BuiltinModelConfig, prompt: str, ctx: InvocationContext) -> str:
    return prompt


def _uppercase(config: BuiltinModelConfig, prompt: str, ctx: InvocationContext) -> str:
    return prompt.upper()


def _word_count(config: BuiltinModelConfig, prompt: str, ctx: InvocationContext) -> str:
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


def _summarize(config: BuiltinModelConfig, prompt: str, ctx: InvocationContext) -> str:
    return summarize(prompt, or_default(config.sentences, 2))


class Sentiment(TypedDict):
    label: Literal["positive", "negative", "neutral"]
    score: float


def sentiment(text: str) -> Sentiment:
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
    label: Literal["positive", "negative", "neutral"] = (
        "positive" if score > 0 else "negative" if score < 0 else "neutral"
    )
    return {"label": label, "score": score}


def _sentiment(config: BuiltinModelConfig, prompt: str, ctx: InvocationContext) -> str:
    return json.dumps(sentiment(prompt))


def keywords(text: str, top_k: int = 5) -> list[str]:
    """The ``top_k`` most frequent content words; ties go to the word seen first."""
    words = _content_words(text)
    first_seen: dict[str, int] = {}
    for i, word in enumerate(words):
        first_seen.setdefault(word, i)
    counts = Counter(words)
    return sorted(counts, key=lambda w: (-counts[w], first_seen[w]))[:top_k]


def _keywords(config: BuiltinModelConfig, prompt: str, ctx: InvocationContext) -> str:
    return ", ".join(keywords(prompt, or_default(config.top_k, 5)))


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
    # Read in a child process within a CPU budget (providers/pdf.py). A font's ToUnicode map may
    # name lone surrogates: text that could not be stored (domain/text.py).
    return storable(pdf_text(data))


def _text_extract(config: BuiltinModelConfig, prompt: str, ctx: InvocationContext) -> str:
    if ctx.read_input_file is None:
        return prompt
    return extract_text(ctx.read_input_file())


def _sleep(config: BuiltinModelConfig, prompt: str, ctx: InvocationContext) -> str:
    time.sleep(or_default(config.seconds, 1.0))
    return prompt


def _flaky(config: BuiltinModelConfig, prompt: str, ctx: InvocationContext) -> str:
    if or_default(config.permanent, False):
        raise PermanentModelError(f"builtin flaky model fails permanently (attempt {ctx.attempt})")
    failures = or_default(config.failures, 1)
    if ctx.attempt <= failures:
        raise TransientModelError(f"builtin flaky model: attempt {ctx.attempt} of {failures} failing")
    return prompt


def _fail(config: BuiltinModelConfig, prompt: str, ctx: InvocationContext) -> str:
    raise PermanentModelError(or_default(config.message, DEFAULT_FAIL_MESSAGE))


ModelFn = Callable[["BuiltinModelConfig", str, InvocationContext], str]

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


#: Which model each option belongs to: read (and checked) for that model only; another model keeps
#: it, unread.
OPTIONS: dict[str, str] = {
    "sentences": "summarize",
    "top_k": "keywords",
    "seconds": "sleep",
    "failures": "flaky",
    "permanent": "flaky",
    "message": "fail",
}

BuiltinModelName = Literal[
    "echo",
    "uppercase",
    "word_count",
    "summarize",
    "sentiment",
    "keywords",
    "text_extract",
    "sleep",
    "flaky",
    "fail",
]


def _options_by_model(schema: dict[str, Any]) -> None:
    """Each option's schema applies when ``model`` names its model (``if``/``then``), as the
    validator reads it; top-level properties keep what every model shares."""
    refuse_inline_secrets(schema)
    properties = schema["properties"]
    by_model: dict[str, dict[str, Any]] = {}
    for option, model in OPTIONS.items():
        by_model.setdefault(model, {})[option] = properties.pop(option)
    schema["allOf"] = [
        {"if": {"properties": {"model": {"const": model}}}, "then": {"properties": options}}
        for model, options in by_model.items()
    ]


#: Most sentences (summarize), keywords (keywords) and failing attempts (flaky) a config may ask for.
MAX_BUILTIN_COUNT = 1000


class BuiltinModelConfig(ModelConfig):
    """The settings of a builtin model: which one, and its own options."""

    model_config = ConfigDict(json_schema_extra=_options_by_model)

    model: Annotated[BuiltinModelName, Field(description="Which builtin model.")]
    # Bounded so that a config that validates also runs (sleep: no longer than a node may run).
    sentences: Annotated[int, Field(ge=1, le=MAX_BUILTIN_COUNT)] | MISSING = MISSING
    top_k: Annotated[int, Field(ge=1, le=MAX_BUILTIN_COUNT)] | MISSING = MISSING
    seconds: Annotated[float, Field(ge=0, le=MAX_NODE_TIMEOUT_SECONDS)] | MISSING = MISSING
    failures: Annotated[int, Field(ge=0, le=MAX_BUILTIN_COUNT)] | MISSING = MISSING
    permanent: bool | MISSING = MISSING
    message: str | MISSING = MISSING

    @model_validator(mode="before")
    @classmethod
    def _own_options_only(cls, data: Any) -> Any:
        # An option is checked for its own model only (echo ignores ``sentences``, whatever it
        # holds), and none is checked while the model itself is wrong.
        if not isinstance(data, Mapping):
            return data
        model = data.get("model")
        return {key: value for key, value in data.items() if OPTIONS.get(key, model) == model}

    @classmethod
    def subject(cls, provider: str, config: Mapping[str, object]) -> str:
        model = config.get("model")
        return f"{provider} {model}" if isinstance(model, str) and model in MODELS else provider


CONFIG = BuiltinModelConfig


def invoke(config: BuiltinModelConfig, prompt: str, ctx: InvocationContext) -> ModelResult:
    output = MODELS[config.model](config, prompt, ctx)
    return ModelResult(output=output, usage=approximate_usage(prompt, output))


def dry_run(config: BuiltinModelConfig, prompt: str) -> ModelResult:
    """What a call would answer, at once (a batch's estimate): ``sleep`` without its wait,
    ``flaky`` as its attempt after the failing ones (a permanent one raises, as ``fail`` does)."""
    if config.model == "sleep":
        return ModelResult(output=prompt, usage=approximate_usage(prompt, prompt))
    attempt = or_default(config.failures, 1) + 1
    return invoke(config, prompt, InvocationContext(attempt=attempt))


PROVIDER = Adapter(BuiltinModelConfig, invoke)
