"""Task generators: answers are right (checked by parsing every solved line independently), candidates are
well formed, the held-out split is respected, and everything is fixed by the seed."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from blt.errors import BLTError
from blt.evaluate.char_tasks import (
    TASKS,
    TaskExample,
    cannot_become,
    clean_words,
    evaluate_examples,
    load_split,
    make_examples,
    make_task_set,
    part_of,
    rank_candidates,
    save_split,
    split_words,
    wilson_interval,
    words_from_text,
)
from tests.evaluate.conftest import pseudo_words

Q = r'"([^"]*)"'  # a quoted word, letter or sentence


def swap_letters(word: str, a: str, b: str) -> str:
    return "".join(b if c == a else a if c == b else c for c in word)


def swap_words(sentence: str, a: str, b: str) -> str:
    return " ".join(b if w == a else a if w == b else w for w in sentence.split())


# task -> (pattern of a solved line, the right answer computed from the pattern's groups)
SOLVERS = {
    "spell": (rf"Spell {Q}: (.*)", lambda w: " ".join(w)),
    "spell_inverse": (rf"Join {Q}: (.*)", lambda s: s.replace(" ", "")),
    "contains_char": (rf"Does {Q} contain {Q}\? (.*)", lambda w, c: "yes" if c in w else "no"),
    "contains_word": (rf"Does {Q} contain the word {Q}\? (.*)", lambda s, w: "yes" if w in s.split() else "no"),
    "insert_char": (rf"Add {Q} after every {Q} in {Q}: (.*)", lambda x, c, w: "".join(ch + x if ch == c else ch for ch in w)),
    "delete_char": (rf"Delete every {Q} in {Q}: (.*)", lambda c, w: "".join(ch for ch in w if ch != c)),
    "substitute_char": (rf"Replace every {Q} with {Q} in {Q}: (.*)", lambda c, x, w: "".join(x if ch == c else ch for ch in w)),
    "swap_char": (rf"Swap {Q} and {Q} in {Q}: (.*)", lambda a, b, w: swap_letters(w, a, b)),
    "insert_word": (rf"Add {Q} after every {Q} in {Q}: (.*)",
                    lambda x, t, s: " ".join(v for w in s.split() for v in ([w, x] if w == t else [w]))),
    "delete_word": (rf"Delete every {Q} in {Q}: (.*)", lambda t, s: " ".join(w for w in s.split() if w != t)),
    "substitute_word": (rf"Replace every {Q} with {Q} in {Q}: (.*)",
                        lambda t, x, s: " ".join(x if w == t else w for w in s.split())),
    "swap_word": (rf"Swap {Q} and {Q} in {Q}: (.*)", lambda a, b, s: swap_words(s, a, b)),
    "compare_numbers": (r"Which is bigger, ([\d.]+) or ([\d.]+)\? (.*)", lambda a, b: max(a, b, key=Decimal)),
}


@pytest.fixture(scope="module")
def split():
    return split_words(pseudo_words(), held_out_fraction=0.25, seed=0)


def test_every_task_has_a_solver():
    assert set(SOLVERS) == set(TASKS)


@pytest.mark.parametrize("task", list(TASKS))
def test_answers_are_right_in_every_solved_line(task, split):
    pattern, solve = SOLVERS[task]
    for part in ("held_out", "train"):
        for ex in make_examples(task, split, n=40, shots=2, seed=1, part=part):
            lines = ex.text.splitlines()
            assert len(lines) == 3 and ex.text.endswith("\n")
            for line in lines:  # two shots and the question, each with its answer
                *question, answer = re.fullmatch(pattern, line).groups()
                assert answer == solve(*question), line
            assert ex.prompt + TaskExample.continuation(ex.answer) == ex.text


@pytest.mark.parametrize("task", list(TASKS))
def test_candidates_hold_the_answer_once_and_are_distinct(task, split):
    for ex in make_examples(task, split, n=40, shots=0, seed=2):
        assert ex.candidates.count(ex.answer) == 1
        assert len(set(ex.candidates)) == len(ex.candidates) >= 2
        assert all(c and "\n" not in c for c in ex.candidates)
        if task.startswith("contains"):
            assert sorted(ex.candidates) == ["no", "yes"]
    positions = {ex.candidates.index(ex.answer) for ex in make_examples(task, split, n=40, shots=0, seed=2)}
    assert len(positions) > 1  # shuffled: a model that always picks the first candidate is not always right


def test_split_is_disjoint_covers_the_words_and_is_stable(split):
    words = clean_words(pseudo_words())
    assert not set(split.train) & set(split.held_out)
    assert sorted(split.train + split.held_out) == words
    assert len(split.held_out) / len(words) == pytest.approx(0.25, abs=0.05)
    assert all(part_of(w, 0, 0.25) == "held_out" for w in split.held_out)
    # A word's part does not depend on the other words in the list.
    smaller = split_words(words[::2], held_out_fraction=0.25, seed=0)
    assert set(smaller.held_out) == set(split.held_out) & set(words[::2])
    assert split_words(words, 0.25, seed=1).held_out != split.held_out


@pytest.mark.parametrize("task", list(TASKS))
def test_held_out_questions_use_held_out_keys_and_shots_use_train_keys(task, split):
    held_out, train = set(split.held_out), set(split.train)
    for ex in make_examples(task, split, n=30, shots=3, seed=3):
        assert ex.keys and all(split.part_of(k) == "held_out" for k in ex.keys)
        assert all(split.part_of(k) == "train" for k in ex.shot_keys)
        if task != "compare_numbers":
            assert set(ex.keys) <= held_out and set(ex.shot_keys) <= train
            question = ex.prompt.splitlines()[-1]
            quoted = {w for q in re.findall(Q, question) for w in q.split()}
            assert not quoted & train  # no train word slips into a held-out question
    for ex in make_examples(task, split, n=30, shots=3, seed=3, part="train"):
        assert all(split.part_of(k) == "train" for k in ex.keys)
        assert not set(ex.keys) & set(ex.shot_keys)  # a shot never answers the question


def test_examples_are_fixed_by_the_seed(split):
    a = make_task_set(split, n=5, shots=2, seed=7)
    assert a == make_task_set(split, n=5, shots=2, seed=7)
    assert a != make_task_set(split, n=5, shots=2, seed=8)
    assert list(a) == list(TASKS)
    # A task's examples don't depend on which other tasks are generated.
    assert make_task_set(split, ["swap_word"], n=5, shots=2, seed=7)["swap_word"] == a["swap_word"]


def test_number_comparison_includes_the_decimal_trap(split):
    examples = make_examples("compare_numbers", split, n=200, shots=0, seed=0)
    traps = []
    for ex in examples:
        a, b = re.fullmatch(r"Which is bigger, ([\d.]+) or ([\d.]+)\?", ex.prompt).groups()
        if "." in a and "." in b and a.split(".")[0] == b.split(".")[0]:
            shorter = min(a, b, key=len)
            traps.append(ex.answer == shorter)
    assert len(traps) > 20 and 0 < sum(traps) < len(traps)  # like 9.9 > 9.11, and like 3.45 > 3.2


def test_clean_and_mined_words():
    assert clean_words(["Apple", "it's", "aa", "ab", "abc", "abc", "naïve", "élan", "word", "x" * 11, " spaced "]) == [
        "abc", "spaced", "word"]
    text = [b"the cat sat on the mat. The cat ran; cats!", b"the dog and the cat"]
    assert words_from_text(text, min_count=2) == ["cat", "the"]
    assert words_from_text(text, limit=1, min_count=1) == ["the"]


def test_split_round_trips_through_json(split, tmp_path):
    save_split(tmp_path / "words.json", split, "pseudo words")
    loaded, source = load_split(tmp_path / "words.json")
    assert loaded == split and source.startswith("pseudo words")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(BLTError, match="not a word split"):
        load_split(tmp_path / "bad.json")


def test_user_errors(split):
    with pytest.raises(BLTError, match="unknown task"):
        make_examples("spelling", split, n=1)
    with pytest.raises(BLTError, match="use a longer word list"):
        split_words(["apple", "house", "zebra"])
    with pytest.raises(BLTError, match="unknown part"):
        make_examples("spell", split, n=1, part="test")


class AnswerKeyScorer:
    """Prefers the continuation whose text is in ``preferred``; greedy answers from the same key."""

    def __init__(self, preferred: dict[str, str]):
        self.preferred = preferred  # prompt -> the candidate it likes

    def logprob(self, prompts, continuations):
        return [0.0 if c.decode() == TaskExample.continuation(self.preferred[p.decode()]) else -5.0
                for p, c in zip(prompts, continuations)]

    def greedy(self, prompt, max_bytes, stop=None, halt=None):
        return (TaskExample.continuation(self.preferred[prompt.decode()])[:max_bytes]).encode()


def test_scoring_counts_right_answers(split):
    examples = make_examples("substitute_char", split, n=20, shots=1, seed=0)
    perfect = evaluate_examples(AnswerKeyScorer({e.prompt: e.answer for e in examples}), examples)
    assert (perfect.exact_match, perfect.ranking_accuracy, perfect.examples) == (1.0, 1.0, 20)
    wrong = {e.prompt: next(c for c in e.candidates if c != e.answer) for e in examples}
    none_right = wilson_interval(0, 20)
    assert evaluate_examples(AnswerKeyScorer(wrong), examples).to_dict() == {
        "examples": 20, "exact_match": 0.0, "exact_match_interval": list(none_right), "ranking_accuracy": 0.0,
        "ranking_interval": list(none_right)}
    half = {e.prompt: e.answer if i % 2 else wrong[e.prompt] for i, e in enumerate(examples)}
    assert evaluate_examples(AnswerKeyScorer(half), examples, greedy=False).to_dict() == {
        "examples": 20, "exact_match": None, "exact_match_interval": None, "ranking_accuracy": 0.5,
        "ranking_interval": list(wilson_interval(10, 20))}


def test_wilson_intervals_cover_the_rate_and_narrow_with_more_questions():
    assert wilson_interval(0, 200)[0] == 0.0 and wilson_interval(200, 200)[1] == 1.0
    for k, n in ((1, 10), (37, 200), (120, 200), (999, 1000)):
        low, high = wilson_interval(k, n)
        assert 0 <= low < k / n < high <= 1
    width = [high - low for low, high in (wilson_interval(100, 1000), wilson_interval(10, 100))]
    assert width[0] < width[1]
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_rank_candidates_per_byte():
    class LengthScorer:  # -1 nat per byte, and a bonus of 2 for continuations starting with "b"
        def logprob(self, prompts, continuations):
            return [-len(c) + (2.0 if c.startswith(b"b") else 0.0) for c in continuations]

    candidates = [["a", "bbbbbbbb"]]
    assert rank_candidates(LengthScorer(), ["p"], candidates, continuation=lambda c: c) == [0]  # -1 vs -6
    assert rank_candidates(LengthScorer(), ["p"], candidates, continuation=lambda c: c, per_byte=True) == [1]


@pytest.mark.parametrize("out, ruled_out", [
    (b"", False), (b"  ", False), (b" c", False), (b"c a t", False), (b"c a t  ", False), (b"c a t\n", False),
    (b" c a t \nmore", False), (b"c a x", True), (b"c a tt", True), (b"c a t s", True), (b"\n", True),
    (b"c a\n", True), (b"x", True),
])
def test_an_answer_is_given_up_only_once_no_continuation_can_match_it(out, ruled_out):
    assert cannot_become(b"c a t", out) == ruled_out


def test_giving_up_early_does_not_change_exact_match(split):
    """A scorer that honours ``halt`` counts the same hits as one that generates every byte."""
    examples = make_examples("substitute_char", split, n=20, shots=1, seed=0)
    answers = {e.prompt: (e.answer if i % 2 else e.answer[::-1] + "x") for i, e in enumerate(examples)}

    class Halting(AnswerKeyScorer):
        def greedy(self, prompt, max_bytes, stop=None, halt=None):
            full = super().greedy(prompt, max_bytes, stop)
            for n in range(1, len(full) + 1):
                if halt is not None and halt(full[:n]):
                    return full[:n]
            return full

    assert evaluate_examples(Halting(answers), examples) == evaluate_examples(AnswerKeyScorer(answers), examples)
