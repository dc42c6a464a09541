"""`scripts/char_errors.py`: each held-out question's greedy answer sorted into right, a wrong candidate or
something else, and number pairs sorted into the forms the grammar draws."""

from __future__ import annotations

import json
from decimal import Decimal

import numpy as np
import pytest

from blt.evaluate.char_tasks import _number_pair
from tests.helpers import load_script


@pytest.mark.parametrize("a, b, form", [
    ("9.11", "9.9", "decimal_trap"), ("0.45", "0.5", "decimal_trap"), ("12.5", "9.75", "integer_part"),
    ("123", "99", "integers"), ("4.512", "4.521", "near_digit"), ("1307", "1037", "near_digit"),
    ("7.5", "8.5", "near_digit"),
])
def test_number_forms_are_read_off_the_pair(a, b, form):
    script = load_script("char_errors")
    assert script.number_form(a, b) == script.number_form(b, a) == form


def test_the_grammar_s_pairs_are_read_back_as_their_form():
    import blt.evaluate.char_tasks as char_tasks

    script = load_script("char_errors")
    for form in char_tasks.NUMBER_FORMS:
        rng = np.random.default_rng(0)
        original = char_tasks.NUMBER_FORMS
        try:
            char_tasks.NUMBER_FORMS = (form,)  # the grammar then draws only this form
            drawn = [_number_pair(rng) for _ in range(300)]
        finally:
            char_tasks.NUMBER_FORMS = original
        read = [script.number_form(a, b) for a, b in drawn]
        misread = [pair for pair, r in zip(drawn, read) if r != form]
        if form == "near_digit":  # a number and the next one, when adding 1 carries (9.7, 10.7), reads otherwise
            assert all(abs(Decimal(a) - Decimal(b)) == 1 and len(a) != len(b) for a, b in misread)
        else:
            assert misread == []


def test_kinds_and_questions():
    script = load_script("char_errors")
    assert script.question_numbers('Which is bigger, 1 or 2? 2\nWhich is bigger, 9.11 or 9.9?') == ("9.11", "9.9")
    assert script.kind_of("9.9", "9.9", ("9.11",)) == "right"
    assert script.kind_of("9.11", "9.9", ("9.11",)) == "wrong candidate"
    assert script.kind_of("9.1", "9.9", ("9.11",)) == "something else"


def test_the_script_sorts_every_answer(blt_run, token_run, data_dir, tmp_path, capsys):
    from blt.evaluate.char_tasks import words_from_data

    script = load_script("char_errors")
    words = tmp_path / "words.txt"
    words.write_text("\n".join(words_from_data(data_dir)) + "\n")
    out = tmp_path / "out"
    assert script.main(["--model", f"blt={blt_run}", "--model", f"bpe={token_run}", "--words", str(words),
                        "--questions", "4", "--out", str(out)]) == 0
    record = json.loads((out / "errors.json").read_text())
    for model in ("blt", "bpe"):
        answers = record["models"][model]["answers"]
        assert list(answers) == script.TASKS and all(len(rows) == 4 for rows in answers.values())
        assert all(r["kind"] in script.KINDS for rows in answers.values() for r in rows)
        assert all(r["form"] in script.NUMBER_FORMS for r in answers["compare_numbers"])
    text = (out / "errors.md").read_text()
    assert "| compare_numbers | blt |" in text and "| decimal_trap | " in text
    with pytest.raises(SystemExit):
        script.main(["--model", "blt", "--words", str(words)])  # argparse: expected NAME=RUN
    capsys.readouterr()
