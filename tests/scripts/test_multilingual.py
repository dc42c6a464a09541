"""`scripts/multilingual.py`: the corpus it builds and the report it writes (the runs are `blt compare`'s)."""

from __future__ import annotations

import argparse

from blt.data import PreparedData, prepare
from tests.helpers import load_script


def fake_corpora(root):
    for rel, text in {"fortunes/cookie": "A fortune.\n%\nAnother one.\n" * 300,
                      "fortunes/de/brot": "Brot und Butter.\n%\n" * 400, "fortunes/es/refranes": "Hola amigo.\n" * 500,
                      "fortunes/it/proverbi": "Chi va piano.\n" * 500, "fortunes/ru/2001.03": "Привет, мир.\n" * 500,
                      "bibles/engWEB2015eb.txt": "In the beginning.\n" * 600,
                      "bibles/spaRV1909eb.txt": "En el principio.\n" * 600}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_documents_end_at_line_ends_and_keep_every_byte():
    ml = load_script("multilingual")
    data = b"".join(b"line %d\n" % i for i in range(5000))
    docs = ml.documents_of(data, limit=1000)
    assert b"".join(docs) == data and all(len(d) <= 1000 and d.endswith(b"\n") for d in docs)
    assert ml.documents_of(b"x" * 2500, limit=1000) == [b"x" * 1000, b"x" * 1000, b"x" * 500]


def test_corpus_has_each_language_in_equal_share_and_the_split_knows_them(tmp_path):
    ml = load_script("multilingual")
    fake_corpora(tmp_path / "corpora")
    assert [p.name for p in ml.language_texts(tmp_path / "corpora", "en")] == ["engWEB2015eb.txt", "cookie"]
    args = argparse.Namespace(corpora=tmp_path / "corpora", files=tmp_path / "files", bytes_per_language=4000,
                              seed=0)
    ml.build_corpus(args)
    for language in ml.LANGUAGES:
        sizes = [p.stat().st_size for p in (tmp_path / "files" / language).iterdir()]
        assert 4000 <= sum(sizes) < 4000 + ml.DOCUMENT_BYTES and all(s <= ml.DOCUMENT_BYTES for s in sizes)
    first = sorted((tmp_path / "files").rglob("*.txt"))
    ml.build_corpus(args)  # done: left as it is
    assert sorted((tmp_path / "files").rglob("*.txt")) == first
    prepare([str(tmp_path / "files")], tmp_path / "data", val_fraction=0.5, seed=0, progress=False)
    docs = ml.language_documents(PreparedData.open(tmp_path / "data"))
    assert set(docs) == set(ml.LANGUAGES)
    assert sum(map(len, docs.values())) == len(PreparedData.open(tmp_path / "data").split("val"))


def test_report_has_per_language_bits_gaps_and_units():
    ml = load_script("multilingual")
    lang = lambda bpb, unit: {"documents": 3, "bytes": 9000, "bpb": bpb, "bytes_per_patch": unit,  # noqa: E731
                              "bytes_per_token": unit}
    members = [{"member": "blt-p8", "kind": "blt", "val_bpb": 2.0, "inference_flops_per_byte": 3e6,
                "languages": {"en": lang(1.9, 7.5), "ru": lang(2.1, 9.0)}},
               {"member": "bpe", "kind": "bpe", "val_bpb": 2.2, "inference_flops_per_byte": 4e6,
                "languages": {"en": lang(2.0, 3.9), "ru": lang(2.6, 2.1)}},
               {"member": "byte", "kind": "byte", "val_bpb": 3.0, "inference_flops_per_byte": 9e6,
                "languages": {"en": lang(2.9, 1.0), "ru": lang(3.1, 1.0)}}]
    record = {"settings": {"budget": 1e13, "preset": "paper-xs", "bytes_per_language": 1000}, "members": members}
    text = ml.markdown(record)
    assert "| blt-p8 | 2.000 | 1.900 | 2.100 | 3.00M |" in text
    assert "| best BLT − BPE | | -0.100 | -0.500 | |" in text
    assert "| bpe | 3.90 | 2.10 |" in text and "| byte | 2.90" not in text.split("Bytes per global step")[1]
