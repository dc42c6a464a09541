"""The five input noises of the BLT paper's robustness evaluation (its noised HellaSwag, after Table 3).

Each is a pure function ``noise(text, seed, rate) -> text``: the same arguments give the same output, and
nothing outside it changes. They work on characters, not bytes, so multi-byte UTF-8 characters are kept
whole; `noise_bytes` applies one to raw bytes (invalid UTF-8 passes through untouched).

`evaluate_noise` measures a model on any set of texts, clean and under each noise: bits per byte of the
(noised) text, and the accuracy of choosing a passage's true ending among endings of other passages
when its beginning is noised (the endings stay clean, as in the paper's noised HellaSwag).

>>> antspeak("Hi there")
'H I   T H E R E'
>>> upper_case("Hi there")
'HI THERE'
>>> drop_chars("abcdefghij", seed=0, rate=0.1) == drop_chars("abcdefghij", seed=0, rate=0.1)
True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from blt.errors import BLTError
from blt.evaluate.char_tasks import wilson_interval

DROP_RATE = 0.1  # the paper drops ~10% of characters
REPEAT_RATE = 0.2  # and repeats ~20%
RANDOM_CASE_RATE = 0.5  # each letter's case is a coin flip
MAX_EXTRA_COPIES = 3  # a repeated character appears 2 to 1 + MAX_EXTRA_COPIES times


Seed = int | Sequence[int]


def _rng(seed: Seed) -> np.random.Generator:
    return np.random.default_rng(seed)


def _check_rate(rate: float) -> None:
    if not 0.0 <= rate <= 1.0:
        raise BLTError(f"noise rate must be in [0, 1], got {rate}")


def antspeak(text: str, seed: Seed = 0, rate: float | None = None) -> str:
    """Upper-case every character and put one space between characters ("hello" -> "H E L L O").

    A space of the input becomes a space between two separators, so words stay three spaces apart.
    ``seed`` and ``rate`` are unused (the noise is deterministic and total).
    """
    return " ".join(text.upper())


def upper_case(text: str, seed: Seed = 0, rate: float | None = None) -> str:
    """The whole text in upper case (``seed`` and ``rate`` unused)."""
    return text.upper()


def drop_chars(text: str, seed: Seed = 0, rate: float = DROP_RATE) -> str:
    """Drop each character independently with probability ``rate``."""
    _check_rate(rate)
    keep = _rng(seed).random(len(text)) >= rate
    return "".join(c for c, k in zip(text, keep) if k)


def repeat_chars(text: str, seed: Seed = 0, rate: float = REPEAT_RATE) -> str:
    """Repeat each character independently with probability ``rate``: it then appears 2 to
    ``1 + MAX_EXTRA_COPIES`` times in a row (the number of extra copies is uniform)."""
    _check_rate(rate)
    rng = _rng(seed)
    repeated = rng.random(len(text)) < rate
    extra = rng.integers(1, MAX_EXTRA_COPIES + 1, len(text))
    return "".join(c * (1 + int(n)) if r else c for c, r, n in zip(text, repeated, extra))


def random_case(text: str, seed: Seed = 0, rate: float = RANDOM_CASE_RATE) -> str:
    """Swap the case of each character independently with probability ``rate`` (characters without case
    are unchanged). At the default 0.5 every letter's case is a coin flip."""
    _check_rate(rate)
    flip = _rng(seed).random(len(text)) < rate
    return "".join(c.swapcase() if f and len(c.swapcase()) == 1 else c for c, f in zip(text, flip))


NOISES: dict[str, Callable[..., str]] = {
    "antspeak": antspeak,
    "drop_chars": drop_chars,
    "random_case": random_case,
    "repeat_chars": repeat_chars,
    "upper_case": upper_case,
}


def apply_noise(text: str, noise: str, seed: Seed = 0, rate: float | None = None) -> str:
    """``NOISES[noise](text, seed, rate)`` (rate None: the noise's default)."""
    if noise not in NOISES:
        raise BLTError(f"unknown noise {noise!r}; choose from {', '.join(NOISES)}")
    fn = NOISES[noise]
    return fn(text, seed) if rate is None else fn(text, seed, rate)


def noise_bytes(data: bytes, noise: str, seed: Seed = 0, rate: float | None = None) -> bytes:
    """`apply_noise` on bytes decoded as UTF-8; bytes that are not valid UTF-8 pass through as they are."""
    text = data.decode("utf-8", errors="surrogateescape")
    return apply_noise(text, noise, seed, rate).encode("utf-8", errors="surrogateescape")


# --- evaluation under noise --------------------------------------------------------------------------

PASSAGE_BYTES = 192  # clean passage length (AntSpeak doubles it)
PASSAGES_PER_TEXT = 2
ENDING_FRACTION = 0.25  # the last quarter of a passage is the ending to choose
CHOICES = 4  # endings per passage: its own and three of other passages


Z95 = 1.959964  # two-sided 95% quantile of the normal distribution


@dataclass
class NoiseScore:
    noise: str  # "clean" or a name in `NOISES`
    bits_per_byte: float  # over the bytes of the (noised) passages
    bytes: int
    ranking_accuracy: float  # true ending chosen after a noised beginning
    passages: int
    passage_bpb: list[float] = field(default_factory=list)  # bits per byte of each (noised) passage, in order

    @property
    def ranking_interval(self) -> tuple[float, float]:
        """95% Wilson interval of the ranking accuracy."""
        return wilson_interval(round(self.ranking_accuracy * self.passages), self.passages)

    def to_dict(self) -> dict:
        return {**asdict(self), "ranking_interval": list(self.ranking_interval)}


def mean_interval(values: Sequence[float], z: float = Z95) -> tuple[float, float, float]:
    """(mean, low, high): the mean of ``values`` and its 95% interval by the normal approximation
    (``mean +- z * sd / sqrt(n)``; fair from about 30 values on).

    >>> [round(x, 3) for x in mean_interval([1.0, 2.0, 3.0, 4.0])]
    [2.5, 1.235, 3.765]
    """
    n = len(values)
    if n < 2:
        raise BLTError(f"an interval needs at least 2 values, got {n}")
    mean = math.fsum(values) / n
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = z * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def degradation(clean: Sequence[float], noisy: Sequence[float]) -> tuple[float, float, float]:
    """How many bits per byte a noise adds, passage by passage: `mean_interval` of ``noisy[i] - clean[i]``
    (per-passage bits per byte, e.g. `NoiseScore.passage_bpb`). Two models measured on the same passages
    compare by ``degradation`` of their own differences: pass model A's increases as ``noisy`` and B's as
    ``clean`` to get A's extra degradation over B's."""
    if len(clean) != len(noisy):
        raise BLTError(f"need one clean and one noisy value per passage, got {len(clean)} and {len(noisy)}")
    return mean_interval([b - a for a, b in zip(clean, noisy)])


def passages(texts: Iterable[bytes], passage_bytes: int = PASSAGE_BYTES, max_passages: int = 48,
             per_text: int = PASSAGES_PER_TEXT) -> list[str]:
    """Up to ``max_passages`` passages of about ``passage_bytes`` bytes, cut at whitespace, at most ``per_text``
    from each text, in order (bytes that are not UTF-8 are kept as surrogate escapes)."""
    out: list[str] = []
    for data in texts:
        text = bytes(data).decode("utf-8", errors="surrogateescape")
        start, taken = 0, 0
        while taken < per_text and len(out) < max_passages and start + passage_bytes <= len(text):
            end = text.rfind(" ", start + passage_bytes // 2, start + passage_bytes)
            end = end if end > start else start + passage_bytes
            piece = text[start:end]
            if len(piece.split()) >= 8:  # prose or code, not a run of blank lines
                out.append(piece)
                taken += 1
            start = end
        if len(out) >= max_passages:
            break
    return out


def split_ending(passage: str) -> tuple[str, str]:
    """(beginning, ending): the ending is about the last `ENDING_FRACTION` of the passage, from a space on."""
    cut = int(len(passage) * (1 - ENDING_FRACTION))
    space = passage.rfind(" ", 1, cut + 1)
    cut = space if space > len(passage) // 2 else cut
    return passage[:cut], passage[cut:]


def _encode(text: str) -> bytes:
    return text.encode("utf-8", errors="surrogateescape")


def evaluate_noise(scorer, texts: Sequence[str], noises: Iterable[str] = tuple(NOISES), seed: int = 0,
                   progress: Callable[[str], None] | None = None) -> list[NoiseScore]:
    """Bits per byte and ending-choice accuracy on ``texts`` (passages, see `passages`), clean and under each
    noise. Passage ``i`` is noised with seed ``(seed, i)``; its wrong endings are those of the next
    `CHOICES` - 1 passages.

    An ending is scored by how much the beginning raises its log-likelihood: log P(ending | beginning) -
    log P(ending) (the PMI scoring of Holtzman et al., 2021). Without the second term a small model picks
    the ending that is most likely on its own whatever the beginning, and noise could not change its choice.
    """
    texts = list(texts)
    if len(texts) < CHOICES:
        raise BLTError(f"need at least {CHOICES} passages to evaluate under noise, got {len(texts)}")
    for noise in noises:
        if noise not in NOISES:
            raise BLTError(f"unknown noise {noise!r}; choose from {', '.join(NOISES)}")
    split = [split_ending(t) for t in texts]
    endings = [_encode(e) for _, e in split]
    prior = scorer.logprob([b""] * len(endings), endings)  # log P(ending) after BOS alone
    # Passage i's own ending sits at position i % CHOICES among the endings of the passages after it.
    choices = [[(i + (j - i) % CHOICES) % len(texts) for j in range(CHOICES)] for i in range(len(texts))]
    results = []
    for noise in ("clean", *noises):
        if progress is not None:
            progress(noise)
        data = [_encode(t if noise == "clean" else apply_noise(t, noise, (seed, i))) for i, t in enumerate(texts)]
        logprobs = scorer.logprob([b""] * len(data), data)
        nats, total = -sum(logprobs), sum(len(d) for d in data)
        per_passage = [-lp / max(len(d), 1) / math.log(2) for lp, d in zip(logprobs, data)]
        beginnings = [_encode(b if noise == "clean" else apply_noise(b, noise, (seed, i))) for i, (b, _) in enumerate(split)]
        scores = scorer.logprob([beginnings[i] for i, row in enumerate(choices) for _ in row],
                                [endings[k] for row in choices for k in row])
        right = 0
        for i, row in enumerate(choices):
            gains = [scores[i * CHOICES + j] - prior[k] for j, k in enumerate(row)]
            right += int(np.argmax(gains)) == i % CHOICES
        results.append(NoiseScore(noise, nats / max(total, 1) / math.log(2), total, right / len(texts), len(texts),
                                  per_passage))
    return results
