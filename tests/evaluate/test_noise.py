"""The five noises do what they say, on fixed seeds; the noise evaluation measures what it says."""

from __future__ import annotations

import math
import string

import pytest

from blt.errors import BLTError
from blt.evaluate.noise import (
    CHOICES,
    MAX_EXTRA_COPIES,
    NOISES,
    antspeak,
    apply_noise,
    degradation,
    drop_chars,
    evaluate_noise,
    mean_interval,
    noise_bytes,
    passages,
    random_case,
    repeat_chars,
    split_ending,
    upper_case,
)

# No character follows itself, so runs in a noised text show exactly which characters were repeated.
TEXT = ("The quick brown fox jumps over a lazy dog; 0123456789! " * 200).replace("  ", " ")
NO_ADJACENT_REPEATS = (string.ascii_lowercase + string.ascii_uppercase + string.digits) * 100


def runs(text: str) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for c in text:
        if out and out[-1][0] == c:
            out[-1] = (c, out[-1][1] + 1)
        else:
            out.append((c, 1))
    return out


def is_subsequence(small: str, big: str) -> bool:
    it = iter(big)
    return all(c in it for c in small)


def test_antspeak_uppercases_and_spaces_every_character():
    assert antspeak("hello") == "H E L L O"
    assert antspeak("Hi there") == "H I   T H E R E"
    assert antspeak("") == ""
    noisy = antspeak(TEXT)
    assert noisy[::2] == TEXT.upper() and set(noisy[1::2]) == {" "}


def test_upper_case():
    assert upper_case("Hello, wörld 9") == "HELLO, WÖRLD 9"


def test_drop_chars_drops_about_the_rate_and_keeps_order():
    noisy = drop_chars(TEXT, seed=3)
    assert is_subsequence(noisy, TEXT)
    assert 1 - len(noisy) / len(TEXT) == pytest.approx(0.1, abs=0.01)
    assert 1 - len(drop_chars(TEXT, seed=3, rate=0.5)) / len(TEXT) == pytest.approx(0.5, abs=0.02)
    assert drop_chars(TEXT, seed=3, rate=0.0) == TEXT and drop_chars(TEXT, seed=3, rate=1.0) == ""


def test_repeat_chars_repeats_about_the_rate_and_nothing_else():
    noisy = repeat_chars(NO_ADJACENT_REPEATS, seed=5)
    pieces = runs(noisy)
    assert "".join(c for c, _ in pieces) == NO_ADJACENT_REPEATS  # every character kept, in order
    lengths = [n for _, n in pieces]
    assert set(lengths) == set(range(1, MAX_EXTRA_COPIES + 2))  # 1 (kept as is) to 1 + MAX_EXTRA_COPIES
    assert sum(n > 1 for n in lengths) / len(lengths) == pytest.approx(0.2, abs=0.015)
    assert repeat_chars(NO_ADJACENT_REPEATS, seed=5, rate=0.0) == NO_ADJACENT_REPEATS


def test_random_case_changes_only_case_about_half_the_letters():
    noisy = random_case(TEXT, seed=7)
    assert len(noisy) == len(TEXT) and noisy.lower() == TEXT.lower()
    letters = [(a, b) for a, b in zip(TEXT, noisy) if a.isalpha()]
    assert sum(a != b for a, b in letters) / len(letters) == pytest.approx(0.5, abs=0.02)
    assert all(a == b for a, b in zip(TEXT, noisy) if not a.isalpha())
    assert random_case(TEXT, seed=7, rate=0.0) == TEXT
    assert random_case("straße", seed=0, rate=1.0) == "STRAßE"  # "ß".swapcase() would be two letters


@pytest.mark.parametrize("noise", sorted(NOISES))
def test_noises_are_pure_functions_of_their_seed(noise):
    assert apply_noise(TEXT, noise, seed=11) == apply_noise(TEXT, noise, seed=11)
    assert apply_noise(TEXT, noise, seed=(1, 2)) == apply_noise(TEXT, noise, seed=(1, 2))
    random = noise in ("drop_chars", "random_case", "repeat_chars")
    assert (apply_noise(TEXT, noise, seed=11) != apply_noise(TEXT, noise, seed=12)) == random
    assert apply_noise(TEXT, noise, seed=11) != TEXT


def test_noise_keeps_multibyte_characters_and_invalid_bytes_whole():
    data = "héllo wörld ✓ ".encode() * 50 + b"\xff tail"
    for noise in NOISES:
        noise_bytes(data, noise, seed=0).replace(b"\xff", b"").decode("utf-8")  # no multi-byte character was cut
    assert noise_bytes(b"ab\xffcd", "upper_case") == b"AB\xffCD"
    assert noise_bytes(b"ab\xffcd", "antspeak") == b"A B \xff C D"


def test_bad_noise_arguments_are_user_errors():
    with pytest.raises(BLTError, match="unknown noise"):
        apply_noise("abc", "shout")
    with pytest.raises(BLTError, match="rate"):
        drop_chars("abc", rate=1.5)


def test_passages_cut_at_spaces_and_split_into_beginning_and_ending():
    texts = [(" ".join(f"word{i}" for i in range(200))).encode(), b"short text", b"\n" * 500]
    out = passages(texts, passage_bytes=100, max_passages=10, per_text=3)
    assert len(out) == 3  # three from the first text; too short; only blank lines
    assert all(50 <= len(p.encode()) <= 100 for p in out)
    assert "".join(out) == " ".join(f"word{i}" for i in range(200))[: len("".join(out))]
    for p in out:
        beginning, ending = split_ending(p)
        assert beginning + ending == p and ending.startswith(" ") and 0.1 < len(ending) / len(p) < 0.5


class MemorizingScorer:
    """Knows the clean passages: a continuation that completes one scores 0, anything else -1 per byte; text
    after BOS alone scores -ln 2 per byte (exactly 1 bit per byte)."""

    def __init__(self, texts):
        self.texts = set(texts)

    def logprob(self, prompts, continuations):
        out = []
        for p, c in zip(prompts, continuations):
            if not p:
                out.append(-math.log(2) * len(c))
            else:
                out.append(0.0 if (p + c).decode() in self.texts else -float(len(c)))
        return out

    def greedy(self, prompt, max_bytes, stop=None, halt=None):
        return b""


def test_evaluate_noise_reports_clean_then_each_noise():
    texts = passages([(" ".join(f"w{i} x{i * 7 % 13}" for i in range(400))).encode()], max_passages=8, per_text=8)
    assert len(texts) == 8 >= CHOICES
    results = evaluate_noise(MemorizingScorer(texts), texts, seed=0)
    assert [r.noise for r in results] == ["clean", *NOISES]
    assert all(r.bits_per_byte == pytest.approx(1.0) and r.passages == 8 for r in results)
    assert results[0].ranking_accuracy == 1.0  # the clean beginnings complete only with their own ending
    assert results[0].bytes == sum(len(t.encode()) for t in texts)
    antspeak_bytes = next(r.bytes for r in results if r.noise == "antspeak")
    assert antspeak_bytes == sum(2 * len(t) - 1 for t in texts)
    for r in results:  # one value a passage, pooling back to the reported figure
        assert len(r.passage_bpb) == 8 and all(b == pytest.approx(1.0) for b in r.passage_bpb)
        low, high = r.ranking_interval
        assert 0 <= low <= r.ranking_accuracy <= high <= 1
        assert r.to_dict()["ranking_interval"] == [low, high]
    with pytest.raises(BLTError, match="at least"):
        evaluate_noise(MemorizingScorer(texts), texts[:2])


def test_degradation_is_a_paired_mean_with_an_interval_that_narrows_with_passages():
    import numpy as np

    rng = np.random.default_rng(0)
    clean = rng.normal(3.0, 1.0, 400)
    noisy = clean + 0.5 + rng.normal(0, 0.1, 400)  # noise adds 0.5 bits, passage by passage
    mean, low, high = degradation(list(clean), list(noisy))
    assert low < 0.5 < high and high - low < 0.03  # pairing removes the spread between passages
    _, low50, high50 = degradation(list(clean[:50]), list(noisy[:50]))
    assert high50 - low50 > high - low
    assert mean_interval([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)
    with pytest.raises(BLTError, match="one clean and one noisy"):
        degradation([1.0, 2.0], [1.0])
    with pytest.raises(BLTError, match="at least 2"):
        mean_interval([1.0])
