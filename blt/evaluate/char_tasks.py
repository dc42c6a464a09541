"""CUTE-style character-level tasks (Edman et al., 2024; BLT paper Table 4) generated from any word list.

A task turns a word (or a "sentence" of words, or a pair of numbers) into a question with one right
answer and a few wrong candidates of the same kind. An example is a few-shot prompt — ``shots`` solved
questions, one per line, then the question — and is scored two ways, so models that were never
instruction-tuned can be measured too (see `evaluate_tasks`):

- exact match: greedy generation after the prompt, up to the newline, equals the answer;
- ranking: the answer's continuation ``" " + answer + "\\n"`` has the highest log-likelihood among the
  candidates' (summed over bytes; the newline makes a prefix of the answer lose).

Words are split once into train and held-out parts by a hash of (seed, word) (`split_words`), so a word's
part never changes when the list changes. Evaluation asks about held-out words with shots drawn from
train words; `blt finetune` trains on the train part only. Number pairs are split the same way.

>>> import itertools
>>> split = split_words("".join(p) for p in itertools.product("abcdef", repeat=4))
>>> ex = make_examples("spell", split, n=1, shots=2, seed=0)[0]
>>> ex.prompt.count("\\n"), ex.answer == " ".join(ex.keys[0])
(2, True)
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import string
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np

from blt.errors import BLTError
from blt.fileio import atomic_write_text

DICT_PATH = Path("/usr/share/dict/words")  # Debian's wamerican
MIN_WORD_LEN, MAX_WORD_LEN = 3, 10
MINED_WORDS = 5000  # most frequent corpus words kept when there is no dictionary
MIN_PART_WORDS = 16  # a part needs this many words (a question and a shot about sentences use up to 14)
MAX_EXAMPLES = 100_000  # examples per task: each is drawn at random, so more only repeat questions
MAX_SHOTS = 64  # solved questions before each one
LETTERS = string.ascii_lowercase
PARTS = ("train", "held_out")
_WORD = re.compile(rb"(?<![A-Za-z])[a-z]{%d,%d}(?![A-Za-z])" % (MIN_WORD_LEN, MAX_WORD_LEN))


# --- word lists ------------------------------------------------------------------------------------

def clean_words(words: Iterable[str]) -> list[str]:
    """Sorted distinct lower-case ASCII words of 3-10 letters with at least two different letters
    (dictionary extras such as "Apple's" or "é" are dropped)."""
    keep = {w for w in (w.strip() for w in words)
            if MIN_WORD_LEN <= len(w) <= MAX_WORD_LEN and w.isascii() and w.isalpha() and w.islower()
            and len(set(w)) >= 2}
    return sorted(keep)


def words_from_file(path: str | Path) -> list[str]:
    """Words of a word list with one word a line (e.g. /usr/share/dict/words)."""
    path = Path(path)
    if not path.is_file():
        raise BLTError(f"word list {path} does not exist")
    words = clean_words(path.read_text(encoding="utf-8", errors="replace").splitlines())
    if not words:
        raise BLTError(f"word list {path} holds no lower-case words of {MIN_WORD_LEN}-{MAX_WORD_LEN} letters")
    return words


def words_from_text(chunks: Iterable[bytes], limit: int = MINED_WORDS, min_count: int = 2) -> list[str]:
    """The ``limit`` most frequent lower-case words (3-10 letters) seen at least ``min_count`` times in
    ``chunks`` of text, sorted (frequency ties broken alphabetically)."""
    counts: Counter[bytes] = Counter()
    for chunk in chunks:
        counts.update(_WORD.findall(chunk))
    frequent = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
    return clean_words(w.decode() for w in frequent[:limit])


def words_from_data(data_dir: str | Path, max_bytes: int = 32 * 2**20, limit: int = MINED_WORDS) -> list[str]:
    """Words mined from the train split of a prepared data directory (its first ``max_bytes`` bytes)."""
    from blt.data import PreparedData

    split = PreparedData.open(Path(data_dir)).split("train")

    def chunks():
        seen = 0
        for i in range(len(split)):
            if seen >= max_bytes:
                return
            doc = bytes(split[i][: max_bytes - seen])
            seen += len(doc)
            yield doc

    return words_from_text(chunks(), limit=limit)


def default_words(data_dir: str | Path | None = None, words_file: str | Path | None = None) -> tuple[list[str], str]:
    """The words to build tasks from and where they came from: ``words_file`` if given, else the system
    dictionary where installed, else words mined from the prepared data in ``data_dir``."""
    if words_file is not None:
        return words_from_file(words_file), str(words_file)
    if DICT_PATH.is_file():
        return words_from_file(DICT_PATH), str(DICT_PATH)
    if data_dir is None:
        raise BLTError(f"no word list: {DICT_PATH} is not installed and no data to mine words from; pass --words FILE")
    words = words_from_data(data_dir)
    if not words:
        raise BLTError(f"no lower-case words found in the train split of {data_dir}; pass --words FILE")
    return words, f"the {len(words)} most frequent words of {data_dir}"


# --- the train / held-out split --------------------------------------------------------------------

def part_of(key: str, seed: int, held_out_fraction: float) -> str:
    """``"held_out"`` for a fraction of keys, else ``"train"``; depends only on (key, seed, fraction)."""
    digest = hashlib.sha256(f"{seed}\0{key}".encode()).digest()
    return "held_out" if int.from_bytes(digest[:8], "little") < held_out_fraction * 2**64 else "train"


@dataclass(frozen=True)
class WordSplit:
    """Words in two disjoint parts; `part_of` places any other key (a number pair) the same way."""

    train: tuple[str, ...]
    held_out: tuple[str, ...]
    seed: int = 0
    held_out_fraction: float = 0.2

    def part_of(self, key: str) -> str:
        return part_of(key, self.seed, self.held_out_fraction)

    def words(self, part: str) -> tuple[str, ...]:
        if part not in PARTS:
            raise BLTError(f"unknown part {part!r}; choose train or held_out")
        return self.train if part == "train" else self.held_out


def split_words(words: Iterable[str], held_out_fraction: float = 0.2, seed: int = 0) -> WordSplit:
    """Split cleaned ``words`` (see `clean_words`) into train and held-out parts by a hash of each word."""
    if not 0.0 < held_out_fraction < 1.0:
        raise BLTError(f"held-out fraction must be in (0, 1), got {held_out_fraction}")
    words = clean_words(words)
    parts: dict[str, list[str]] = {p: [] for p in PARTS}
    for w in words:
        parts[part_of(w, seed, held_out_fraction)].append(w)
    for p in PARTS:
        if len(parts[p]) < MIN_PART_WORDS:
            raise BLTError(f"only {len(parts[p])} of {len(words)} words fall in the {p} part (at least "
                           f"{MIN_PART_WORDS} needed); use a longer word list")
    return WordSplit(tuple(parts["train"]), tuple(parts["held_out"]), seed, held_out_fraction)


def save_split(path: str | Path, split: WordSplit, source: str) -> None:
    """Write a split (and where its words came from) as JSON, so later evaluations ask about the same words."""
    record = {"source": source, "seed": split.seed, "held_out_fraction": split.held_out_fraction,
              "train": list(split.train), "held_out": list(split.held_out)}
    atomic_write_text(Path(path), json.dumps(record, indent=1) + "\n")


def load_split(path: str | Path) -> tuple[WordSplit, str]:
    """A split written by `save_split`, and its source."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
        split = WordSplit(tuple(record["train"]), tuple(record["held_out"]), int(record["seed"]),
                          float(record["held_out_fraction"]))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise BLTError(f"{path} is not a word split written by blt: {err}") from None
    if set(split.train) & set(split.held_out):
        raise BLTError(f"{path}: train and held-out words overlap; delete it to split the words again")
    return split, f"{record['source']} (split saved in {path})"


# --- questions --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Question:
    text: str  # the question, without its answer
    answer: str
    wrong: tuple[str, ...]  # distinct wrong candidates of the same kind
    keys: tuple[str, ...]  # what the split is decided on: the words used, or a number pair


class _Pool:
    """What a task draws from: the words of one part (and the split, for number pairs)."""

    def __init__(self, split: WordSplit, part: str):
        self.split, self.part, self.words = split, part, split.words(part)

    def word(self, rng: np.random.Generator, exclude: Sequence[str] = ()) -> str:
        for _ in range(100):
            w = self.words[int(rng.integers(len(self.words)))]
            if w not in exclude:
                return w
        raise BLTError(f"the {self.part} part has too few distinct words")

    def sentence(self, rng: np.random.Generator, low: int = 4, high: int = 6) -> list[str]:
        n = int(rng.integers(low, high + 1))
        return [self.words[int(i)] for i in rng.choice(len(self.words), size=n, replace=False)]


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _other_letter(rng: np.random.Generator, exclude: Iterable[str]) -> str:
    return _pick(rng, [c for c in LETTERS if c not in set(exclude)])


def _misspell(rng: np.random.Generator, word: str) -> str:
    """One random edit that keeps the length: substitute a letter or swap two adjacent ones. (Rankings sum
    log-likelihoods, so a shorter wrong candidate would win on length alone.)"""
    i = int(rng.integers(len(word)))
    if len(word) < 2 or rng.integers(2):
        return word[:i] + _other_letter(rng, word[i]) + word[i + 1:]
    j = min(i, len(word) - 2)
    return word[:j] + word[j + 1] + word[j] + word[j + 2:]


def _wrong(rng: np.random.Generator, answer: str, plausible: Iterable[str], misspell: Callable[[str], str],
           count: int = 3) -> tuple[str, ...]:
    """``count`` distinct wrong candidates: the plausible mistakes first, then random misspellings of the answer."""
    out: list[str] = []
    for c in plausible:
        if c != answer and c not in out and c:
            out.append(c)
    for _ in range(100):
        if len(out) >= count:
            break
        c = misspell(answer)
        if c != answer and c not in out and c:
            out.append(c)
    return tuple(out[:count])


def _word_misspeller(rng):
    return lambda w: _misspell(rng, w)


def _spaced_misspeller(rng):
    return lambda spelled: " ".join(_misspell(rng, spelled.replace(" ", "")))


def _sentence_misspeller(rng, pool: _Pool):
    """A sentence with one word replaced by another word of the pool."""
    def edit(sentence: str) -> str:
        words = sentence.split()
        i = int(rng.integers(len(words)))
        words[i] = pool.word(rng, exclude=words)
        return " ".join(words)
    return edit


def _replace_first(word: str, old: str, new: str) -> str:
    return word.replace(old, new, 1)


def spell(rng, pool: _Pool) -> Question:
    w = pool.word(rng)
    answer = " ".join(w)
    return Question(f'Spell "{w}":', answer, _wrong(rng, answer, [], _spaced_misspeller(rng)), (w,))


def spell_inverse(rng, pool: _Pool) -> Question:
    w = pool.word(rng)
    return Question(f'Join "{" ".join(w)}":', w, _wrong(rng, w, [w[::-1]], _word_misspeller(rng)), (w,))


def contains_char(rng, pool: _Pool) -> Question:
    w = pool.word(rng)
    yes = bool(rng.integers(2))
    c = _pick(rng, sorted(set(w))) if yes else _other_letter(rng, w)
    answer = "yes" if yes else "no"
    return Question(f'Does "{w}" contain "{c}"?', answer, ("no" if yes else "yes",), (w,))


def contains_word(rng, pool: _Pool) -> Question:
    words = pool.sentence(rng)
    yes = bool(rng.integers(2))
    probe = _pick(rng, words) if yes else pool.word(rng, exclude=words)
    answer = "yes" if yes else "no"
    return Question(f'Does "{" ".join(words)}" contain the word "{probe}"?', answer, ("no" if yes else "yes",),
                    (*words, probe))


def insert_char(rng, pool: _Pool) -> Question:
    w = pool.word(rng)
    c = _pick(rng, sorted(set(w)))
    x = _other_letter(rng, c)
    answer = w.replace(c, c + x)
    other = _pick(rng, sorted(set(w) - {c}))
    plausible = [w.replace(c, x + c), _replace_first(w, c, c + x), w.replace(other, other + x), w]
    return Question(f'Add "{x}" after every "{c}" in "{w}":', answer,
                    _wrong(rng, answer, plausible, _word_misspeller(rng)), (w,))


def delete_char(rng, pool: _Pool) -> Question:
    w = pool.word(rng)
    c = _pick(rng, sorted(set(w)))
    answer = w.replace(c, "")
    other = _pick(rng, sorted(set(w) - {c}))
    plausible = [_replace_first(w, c, ""), w.replace(other, ""), w]
    return Question(f'Delete every "{c}" in "{w}":', answer,
                    _wrong(rng, answer, plausible, _word_misspeller(rng)), (w,))


def substitute_char(rng, pool: _Pool) -> Question:
    w = pool.word(rng)
    c = _pick(rng, sorted(set(w)))
    x = _other_letter(rng, w)
    answer = w.replace(c, x)
    other = _pick(rng, sorted(set(w) - {c}))
    plausible = [_replace_first(w, c, x), w.replace(other, x), w]
    return Question(f'Replace every "{c}" with "{x}" in "{w}":', answer,
                    _wrong(rng, answer, plausible, _word_misspeller(rng)), (w,))


def swap_char(rng, pool: _Pool) -> Question:
    w = pool.word(rng)
    a, b = (str(c) for c in rng.choice(sorted(set(w)), size=2, replace=False))
    answer = w.translate(str.maketrans({a: b, b: a}))
    rest = sorted(set(w) - {a, b})
    plausible = [w, w.replace(a, b), w.replace(b, a)]
    if rest:
        c = _pick(rng, rest)
        plausible.append(w.translate(str.maketrans({a: c, c: a})))
    return Question(f'Swap "{a}" and "{b}" in "{w}":', answer,
                    _wrong(rng, answer, plausible, _word_misspeller(rng)), (w,))


def insert_word(rng, pool: _Pool) -> Question:
    words = pool.sentence(rng)
    t = _pick(rng, words)
    x = pool.word(rng, exclude=words)
    i = words.index(t)
    answer = " ".join(words[:i + 1] + [x] + words[i + 1:])
    j = (i + 1) % len(words)
    plausible = [" ".join(words[:i] + [x] + words[i:]), " ".join(words[:j + 1] + [x] + words[j + 1:]),
                 " ".join(words + [x]), " ".join(words)]
    return Question(f'Add "{x}" after every "{t}" in "{" ".join(words)}":', answer,
                    _wrong(rng, answer, plausible, _sentence_misspeller(rng, pool)), (*words, x))


def delete_word(rng, pool: _Pool) -> Question:
    words = pool.sentence(rng)
    i = int(rng.integers(len(words)))
    t = words[i]
    answer = " ".join(words[:i] + words[i + 1:])
    j = (i + 1) % len(words)
    plausible = [" ".join(words[:j] + words[j + 1:]), " ".join(w for k, w in enumerate(words) if k not in (i, j)),
                 " ".join(words)]
    return Question(f'Delete every "{t}" in "{" ".join(words)}":', answer,
                    _wrong(rng, answer, plausible, _sentence_misspeller(rng, pool)), tuple(words))


def substitute_word(rng, pool: _Pool) -> Question:
    words = pool.sentence(rng)
    i = int(rng.integers(len(words)))
    t = words[i]
    x = pool.word(rng, exclude=words)
    answer = " ".join(words[:i] + [x] + words[i + 1:])
    j = (i + 1) % len(words)
    plausible = [" ".join(words[:j] + [x] + words[j + 1:]), " ".join(words[:i + 1] + [x] + words[i + 1:]),
                 " ".join(words)]
    return Question(f'Replace every "{t}" with "{x}" in "{" ".join(words)}":', answer,
                    _wrong(rng, answer, plausible, _sentence_misspeller(rng, pool)), (*words, x))


def swap_word(rng, pool: _Pool) -> Question:
    words = pool.sentence(rng)
    i, j = sorted(int(k) for k in rng.choice(len(words), size=2, replace=False))

    def swapped(a: int, b: int) -> str:
        out = list(words)
        out[a], out[b] = out[b], out[a]
        return " ".join(out)

    k = next(k for k in range(len(words)) if k not in (i, j))
    plausible = [" ".join(words), swapped(i, k), swapped(j, k)]
    return Question(f'Swap "{words[i]}" and "{words[j]}" in "{" ".join(words)}":', swapped(i, j),
                    _wrong(rng, swapped(i, j), plausible, _sentence_misspeller(rng, pool)), tuple(words))


NUMBER_FORMS = ("decimal_trap", "integer_part", "integers", "near_digit")


def _digits(rng, n: int, lead: bool = True) -> str:
    """``n`` random digits; with ``lead`` the first is not 0 (unless ``n`` is 1)."""
    first = str(int(rng.integers(1 if lead and n > 1 else 0, 10)))
    return first + "".join(str(int(d)) for d in rng.integers(0, 10, n - 1))


def _number(rng, int_digits: int, dec_digits: int) -> str:
    """A number with ``int_digits`` digits before the point (``"0"`` for 0) and ``dec_digits`` after it
    (none: an integer); a decimal part does not end in 0, so the number is written the shortest way."""
    whole = "0" if int_digits == 0 else _digits(rng, int_digits)
    if dec_digits == 0:
        return whole
    decimals = _digits(rng, dec_digits, lead=False)[:-1] + str(int(rng.integers(1, 10)))
    return f"{whole}.{decimals}"


def _number_pair(rng) -> tuple[str, str]:
    """Two different numbers whose order is easy to get wrong by reading digits as text, from a small
    grammar over magnitudes (up to 4 digits before the point) and lengths (up to 4 after it):

    - ``decimal_trap``: one integer part, decimal parts of different lengths (9.11 vs 9.9, 0.45 vs 0.5);
    - ``integer_part``: integer parts of different lengths decide (12.5 vs 9.75);
    - ``integers``: integers of different lengths (123 vs 99);
    - ``near_digit``: one length, one digit apart (4.512 vs 4.521, 1307 vs 1037).
    """
    form = NUMBER_FORMS[int(rng.integers(len(NUMBER_FORMS)))]
    if form == "decimal_trap":
        whole = _number(rng, int(rng.integers(0, 5)), 0)
        short, long_ = sorted(int(n) for n in rng.choice(np.arange(1, 5), size=2, replace=False))
        return f"{whole}.{_number(rng, 0, short)[2:]}", f"{whole}.{_number(rng, 0, long_)[2:]}"
    if form == "integer_part":
        small, big = sorted(int(n) for n in rng.choice(np.arange(1, 5), size=2, replace=False))
        return _number(rng, small, int(rng.integers(2, 5))), _number(rng, big, int(rng.integers(1, 3)))
    if form == "integers":
        small, big = sorted(int(n) for n in rng.choice(np.arange(1, 6), size=2, replace=False))
        return _number(rng, big, 0), _number(rng, small, 0)
    int_digits, dec_digits = int(rng.integers(1, 5)), int(rng.integers(0, 4))
    a = _number(rng, int_digits, dec_digits)
    digits = [i for i, c in enumerate(a) if c != "." and i > 0 and i < len(a) - 1]
    if not digits:
        return a, str(Decimal(a) + 1)
    i = digits[int(rng.integers(len(digits)))]
    b = a[:i] + str((int(a[i]) + int(rng.integers(1, 10))) % 10) + a[i + 1:]
    return a, b


def compare_numbers(rng, pool: _Pool) -> Question:
    for _ in range(1000):
        a, b = _number_pair(rng)
        if Decimal(a) == Decimal(b):
            continue
        key = "numbers:" + "|".join(sorted((a, b)))
        if pool.split.part_of(key) != pool.part:
            continue
        if rng.integers(2):
            a, b = b, a
        answer = a if Decimal(a) > Decimal(b) else b
        return Question(f"Which is bigger, {a} or {b}?", answer, (b if answer == a else a,), (key,))
    raise BLTError(f"could not draw a number pair for the {pool.part} part; use a held-out fraction in (0.01, 0.99)")


TASKS: dict[str, Callable[[np.random.Generator, _Pool], Question]] = {
    "spell": spell,
    "spell_inverse": spell_inverse,
    "contains_char": contains_char,
    "contains_word": contains_word,
    "insert_char": insert_char,
    "delete_char": delete_char,
    "substitute_char": substitute_char,
    "swap_char": swap_char,
    "insert_word": insert_word,
    "delete_word": delete_word,
    "substitute_word": substitute_word,
    "swap_word": swap_word,
    "compare_numbers": compare_numbers,
}
# What the evidence scripts finetune and score (scripts/char_evidence.py, scripts/char_errors.py): six tasks
# that can tell a byte model from a token model, and one split of the words into train and held out.
EVIDENCE_TASKS = ["spell", "spell_inverse", "contains_char", "substitute_char", "swap_char", "compare_numbers"]
EVIDENCE_HELD_OUT_FRACTION, EVIDENCE_SPLIT_SEED = 0.2, 0


# --- few-shot examples ------------------------------------------------------------------------------

@dataclass(frozen=True)
class TaskExample:
    """A few-shot prompt, its answer and the candidates a ranking chooses from (answer included, shuffled)."""

    task: str
    prompt: str  # `shots` solved questions, one a line, then the question (no trailing space)
    answer: str
    candidates: tuple[str, ...]
    keys: tuple[str, ...]  # the question's words (or number pair): all in the evaluated part
    shot_keys: tuple[str, ...]  # the shots' words: all in the train part

    @staticmethod
    def continuation(candidate: str) -> str:
        """What follows the prompt when ``candidate`` is the answer."""
        return f" {candidate}\n"

    @property
    def text(self) -> str:
        """The solved example as a document (what finetuning trains on)."""
        return self.prompt + self.continuation(self.answer)


def check_tasks(tasks: Iterable[str]) -> list[str]:
    tasks = list(tasks)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise BLTError(f"unknown task {unknown[0]!r}; choose from {', '.join(TASKS)}")
    if not tasks:
        raise BLTError("no tasks chosen")
    return tasks


def make_examples(task: str, split: WordSplit, n: int, shots: int = 3, seed: int = 0,
                  part: str = "held_out") -> list[TaskExample]:
    """``n`` examples of ``task`` asking about words of ``part``, each with ``shots`` solved questions about
    train words first. Deterministic in (task, split, n, shots, seed, part)."""
    check_tasks([task])
    if not (1 <= n <= MAX_EXAMPLES and 0 <= shots <= MAX_SHOTS):
        raise BLTError(f"need 1 to {MAX_EXAMPLES:,} examples and 0 to {MAX_SHOTS} shots per task (got {n} examples, "
                       f"{shots} shots)")
    query_pool, shot_pool = _Pool(split, part), _Pool(split, "train")
    rng = np.random.default_rng([seed, zlib.crc32(task.encode()), PARTS.index(part)])
    make = TASKS[task]
    examples = []
    for _ in range(n):
        q = make(rng, query_pool)
        shot_questions: list[Question] = []
        for _ in range(100 * shots):
            if len(shot_questions) == shots:
                break
            s = make(rng, shot_pool)
            if not set(s.keys) & set(q.keys):  # in the train part a shot must not give the answer away
                shot_questions.append(s)
        if len(shot_questions) < shots:
            raise BLTError(f"could not draw {shots} shots for {task} that avoid the question's words; use more words")
        candidates = [q.answer, *q.wrong]
        order = rng.permutation(len(candidates))
        prompt = "".join(s.text + TaskExample.continuation(s.answer) for s in shot_questions) + q.text
        examples.append(TaskExample(
            task=task, prompt=prompt, answer=q.answer, candidates=tuple(candidates[int(i)] for i in order),
            keys=q.keys, shot_keys=tuple(k for s in shot_questions for k in s.keys),
        ))
    return examples


def make_task_set(split: WordSplit, tasks: Iterable[str] | None = None, n: int = 50, shots: int = 3, seed: int = 0,
                  part: str = "held_out") -> dict[str, list[TaskExample]]:
    """`make_examples` for each task (default: all of `TASKS`)."""
    return {t: make_examples(t, split, n, shots, seed, part) for t in check_tasks(tasks if tasks is not None else TASKS)}


# --- scoring ---------------------------------------------------------------------------------------

@dataclass
class TaskScore:
    task: str
    examples: int
    exact_match: float | None  # fraction of greedy generations equal to the answer (None: not run)
    ranking_accuracy: float  # fraction where the answer's continuation is the most likely candidate

    @property
    def exact_match_interval(self) -> tuple[float, float] | None:
        """95% Wilson interval of the exact-match rate."""
        return None if self.exact_match is None else wilson_interval(round(self.exact_match * self.examples), self.examples)

    @property
    def ranking_interval(self) -> tuple[float, float]:
        """95% Wilson interval of the ranking accuracy."""
        return wilson_interval(round(self.ranking_accuracy * self.examples), self.examples)

    def to_dict(self) -> dict:
        exact = self.exact_match_interval
        return {"examples": self.examples, "exact_match": self.exact_match,
                "exact_match_interval": list(exact) if exact is not None else None,
                "ranking_accuracy": self.ranking_accuracy, "ranking_interval": list(self.ranking_interval)}


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of a binomial rate (95% for the default z), which stays inside [0, 1] and is
    honest at 0 or 100%, unlike the normal approximation.

    >>> [round(x, 4) for x in wilson_interval(0, 200)]
    [0.0, 0.0188]
    >>> [round(x, 4) for x in wilson_interval(150, 200)]
    [0.6857, 0.8049]
    """
    if trials <= 0 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials and trials > 0, got {successes} of {trials}")
    p, z2 = successes / trials, z * z
    center = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / (1 + z2 / trials)
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == trials else min(1.0, center + half)
    return low, high


def rank_candidates(scorer, prompts: Sequence[str], candidate_lists: Sequence[Sequence[str]],
                    continuation: Callable[[str], str] = TaskExample.continuation, per_byte: bool = False) -> list[int]:
    """Index of the most likely candidate for each prompt, in one `scorer.logprob` call.

    ``per_byte`` divides each candidate's log-likelihood by its length in bytes (for endings of unequal length).
    """
    def encode(text: str) -> bytes:  # surrogate escapes stand for bytes that are not UTF-8 (see blt.evaluate.noise)
        return text.encode("utf-8", errors="surrogateescape")

    pairs = [(encode(p), encode(continuation(c))) for p, cands in zip(prompts, candidate_lists) for c in cands]
    scores = scorer.logprob([p for p, _ in pairs], [c for _, c in pairs]) if pairs else []
    if per_byte:
        scores = [s / max(1, len(c)) for s, (_, c) in zip(scores, pairs)]
    picks, i = [], 0
    for cands in candidate_lists:
        row = scores[i:i + len(cands)]
        picks.append(int(np.argmax(row)))
        i += len(cands)
    return picks


def greedy_answer(scorer, prompt: str, max_bytes: int, answer: str | None = None) -> str:
    """Greedy generation after ``prompt`` up to the first newline, stripped, as text. With ``answer``, the
    generation may stop as soon as its line can no longer be ``answer`` once stripped (`cannot_become`):
    the result then differs from ``answer`` all the same, so exact match is unchanged."""
    halt = None if answer is None else functools.partial(cannot_become, answer.encode())
    out = scorer.greedy(prompt.encode(), max_bytes, b"\n", halt=halt)
    return out.split(b"\n", 1)[0].decode("utf-8", errors="replace").strip()


def cannot_become(answer: bytes, out: bytes) -> bool:
    """Whether no continuation of ``out`` has a first line that, stripped of whitespace, is ``answer``.

    >>> cannot_become(b"c a t", b" c a"), cannot_become(b"cat", b"cat  "), cannot_become(b"cat", b"cow")
    (False, False, True)
    """
    if b"\n" in out:
        out = out.split(b"\n", 1)[0]
        return out.strip() != answer
    line = out.lstrip()
    if not line:
        return False
    return not (answer.startswith(line) or (line.startswith(answer) and line[len(answer):].isspace()))


def evaluate_examples(scorer, examples: Sequence[TaskExample], greedy: bool = True) -> TaskScore:
    """Exact match (greedy) and ranking accuracy of ``scorer`` on examples of one task."""
    if not examples:
        raise BLTError("no examples to evaluate")
    picks = rank_candidates(scorer, [e.prompt for e in examples], [e.candidates for e in examples])
    ranked = sum(e.candidates[p] == e.answer for e, p in zip(examples, picks)) / len(examples)
    exact = None
    if greedy:
        hits = 0
        for e in examples:
            limit = max(len(c.encode()) for c in e.candidates) + 8
            hits += greedy_answer(scorer, e.prompt, limit, e.answer) == e.answer
        exact = hits / len(examples)
    return TaskScore(examples[0].task, len(examples), exact, ranked)


def evaluate_tasks(scorer, task_set: dict[str, list[TaskExample]], greedy: bool = True,
                   progress: Callable[[str], None] | None = None) -> dict[str, TaskScore]:
    """`evaluate_examples` per task, in order; ``progress(task)`` is called before each."""
    scores = {}
    for task, examples in task_set.items():
        if progress is not None:
            progress(task)
        scores[task] = evaluate_examples(scorer, examples, greedy)
    return scores
