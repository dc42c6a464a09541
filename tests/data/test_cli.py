"""`blt data prepare` and `blt data info`: exit codes and what they print."""

from __future__ import annotations

import pytest

from blt.cli import main
from blt.data import PreparedData


def test_prepare_then_info(corpus, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["data", "prepare", str(corpus), "--out", str(out), "--val-fraction", "0.2", "--seed", "5",
                 "--shard-bytes", "2K"]) == 0
    printed = capsys.readouterr().out
    assert "prepared 41 documents" in printed and f"into {out}" in printed and "train:" in printed
    manifest = PreparedData.open(out).manifest
    assert manifest.args["shard_bytes"] == 2048 and manifest.args["seed"] == 5 and len(manifest.shards) > 2

    assert main(["data", "info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "41 documents" in info and "printable ASCII" in info and "most common" in info
    assert "ok: sizes and sha256" in info


def test_default_corpus_when_no_source_is_given(tmp_path, capsys):
    out = tmp_path / "stdlib"
    assert main(["data", "prepare", "--out", str(out)]) == 0
    assert "prepared" in capsys.readouterr().out
    manifest = PreparedData.open(out, verify=False).manifest
    assert manifest.sources[1] == "pydoc_data.topics" and manifest.total_bytes > 5_000_000
    assert manifest.splits["val"].documents > 0


@pytest.mark.parametrize("argv, message", [
    (["data", "prepare", "{tmp}/missing", "--out", "{tmp}/o"], "missing: no such file or directory"),
    (["data", "prepare", "{corpus}", "--out", "{corpus}/../o", "--val-fraction", "2"], "val_fraction must be in"),
    (["data", "info", "{tmp}"], "manifest.json is missing"),
    (["data", "info", "{tmp}/nothing"], "is not a directory"),
])
def test_user_errors_exit_2_with_one_line(corpus, tmp_path, capsys, argv, message):
    argv = [a.format(tmp=tmp_path, corpus=corpus) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("blt data: error: ") and message in err and err.count("\n") == 1


def test_existing_output_needs_force(corpus, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert main(["data", "prepare", str(corpus), "--out", out]) == 0
    assert main(["data", "prepare", str(corpus), "--out", out]) == 2
    assert "pass --force" in capsys.readouterr().err
    assert main(["data", "prepare", str(corpus), "--out", out, "--force"]) == 0


def test_bad_shard_size_is_an_argparse_error(corpus, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["data", "prepare", str(corpus), "--out", str(tmp_path / "o"), "--shard-bytes", "lots"])
    assert exit_.value.code == 2 and "not a size: 'lots'" in capsys.readouterr().err
