"""Finding documents in files, directories and globs; naming them; what is skipped and what is refused."""

from __future__ import annotations

import os

import pytest

from blt.data import default_corpus_documents
from blt.data.sources import default_corpus_scan, scan_sources
from blt.errors import DataError
from tests.data.corpora import write_tree


def names(scan) -> list[bytes]:
    return [d.name for d in scan.documents]


def test_directory_file_and_glob_names_do_not_depend_on_the_working_directory(tmp_path, monkeypatch):
    write_tree(tmp_path / "corpus", {"b.txt": b"b", "a/z.txt": b"z", "a/y.md": b"y"})
    expected = [b"corpus/a/y.md", b"corpus/a/z.txt", b"corpus/b.txt"]
    assert names(scan_sources([tmp_path / "corpus"])) == expected
    monkeypatch.chdir(tmp_path / "corpus" / "a")
    assert names(scan_sources(["../../corpus/"])) == expected
    assert names(scan_sources(["z.txt"])) == [b"z.txt"]
    monkeypatch.chdir(tmp_path)
    assert names(scan_sources(["corpus/**/*.txt"])) == [b"corpus/a/z.txt", b"corpus/b.txt"]
    assert names(scan_sources(["corpus/*"])) == expected  # a glob matching a directory walks it


def test_empty_duplicate_and_special_files_are_counted_not_documents(tmp_path):
    root = write_tree(tmp_path / "c", {"full.txt": b"x", "empty.txt": b"", "sub/other.txt": b"y"})
    os.mkfifo(root / "pipe")
    (root / "dangling").symlink_to(root / "missing")
    (root / "dirlink").symlink_to(root / "sub")
    scan = scan_sources([root, root / "full.txt"])
    assert names(scan) == [b"c/full.txt", b"c/sub/other.txt"]
    assert scan.skipped == {"empty": 1, "duplicate": 1, "special": 3}
    assert scan.total_bytes == 2


def test_output_directory_inside_a_source_is_not_read(tmp_path):
    root = write_tree(tmp_path / "c", {"a.txt": b"a", "out/manifest.json": b"{}"})
    assert names(scan_sources([root], exclude=str(root / "out"))) == [b"c/a.txt"]
    with pytest.raises(DataError, match="inside the output directory"):
        scan_sources([root / "out" / "manifest.json"], exclude=str(root / "out"))


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "nope.txt", r"nope\.txt: no such file or directory"),
    (lambda p: str(p / "*.nothing"), "matched no files"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "contains no files"),
    (lambda p: (p / "link").symlink_to(p / "gone") or p / "link", "broken symbolic link"),
    (lambda p: os.mkfifo(p / "fifo") or p / "fifo", r"not a regular file or directory \(a FIFO\)"),
])
def test_unusable_sources_are_one_line_errors(tmp_path, make, message):
    with pytest.raises(DataError, match=message) as err:
        scan_sources([make(tmp_path)])
    assert "\n" not in str(err.value)


def test_same_name_from_two_sources_is_refused(tmp_path):
    write_tree(tmp_path / "x" / "corpus", {"a.txt": b"1"})
    write_tree(tmp_path / "y" / "corpus", {"a.txt": b"2"})
    with pytest.raises(DataError, match="same document name 'corpus/a.txt'"):
        scan_sources([tmp_path / "x" / "corpus", tmp_path / "y" / "corpus"])


def test_non_utf8_file_names_keep_their_bytes(tmp_path):
    root = tmp_path / "c"
    root.mkdir()
    raw = os.fsencode(root) + b"/caf\xe9.txt"
    with open(raw, "wb") as f:
        f.write(b"latin-1 name")
    assert names(scan_sources([root])) == [b"c/caf\xe9.txt"]


def test_default_corpus_is_the_stdlib_plus_pydoc_topics():
    scan = default_corpus_scan()
    py = [n for n in names(scan) if n.startswith(b"stdlib/")]
    topics = [n for n in names(scan) if n.startswith(b"pydoc_topics/")]
    assert len(py) > 500 and all(n.endswith(b".py") for n in py)
    assert b"stdlib/os.py" in py and b"stdlib/json/decoder.py" in py
    skipped = {b"site-packages", b"__pycache__"}
    assert not any(part in skipped for n in py for part in n.split(b"/")[:-1])
    assert b"stdlib/test/test_grammar.py" in py  # the test suite is real, varied Python
    assert len(topics) > 50 and b"pydoc_topics/assignment" in topics
    assert scan.total_bytes > 5_000_000
    name, data = next(iter(default_corpus_documents()))
    assert isinstance(name, str) and name.startswith("stdlib/") and data and isinstance(data, bytes)
