"""data/sources.py: CSV/TSV/JSONL quoting, BOM, CRLF, label types; the aclImdb archive and folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import write_imdb_folder, write_imdb_tarball
from textclf_cli.data.sources import read_imdb, read_table, read_texts_file


def write_bytes(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def test_csv_quoted_commas_quotes_and_newlines(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "a.csv", 'text,label\n"hello, world",pos\n"line one\nline two",neg\n'
                                           '"she said ""wow""",pos\nplain,neg\n')
    table = read_table(path, "csv", "text", "label")
    assert table.texts == ["hello, world", "line one\nline two", 'she said "wow"', "plain"]
    assert table.labels == ["pos", "neg", "pos", "neg"]
    assert table.rows[0] == 2 and table.rows[-1] == 6  # the quoted newline makes row 3 span two lines


def test_tsv_quoted_tabs_and_commas(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "a.tsv", 'text\tlabel\n"a\ttab"\tpos\nno, quotes needed\tneg\n')
    table = read_table(path, "tsv", "text", "label")
    assert table.texts == ["a\ttab", "no, quotes needed"]
    assert table.labels == ["pos", "neg"]


def test_jsonl_any_field_order_extra_fields_and_blank_lines(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "a.jsonl", '{"label": "pos", "text": "one, \\"two\\"\\nthree", "id": 1}\n\n'
                                             '{"text": "tab\\there", "label": "neg"}\n')
    table = read_table(path, "jsonl", "text", "label")
    assert table.texts == ['one, "two"\nthree', "tab\there"]
    assert table.labels == ["pos", "neg"]
    assert table.rows == [1, 3]


@pytest.mark.parametrize(
    ("file_format", "content"),
    [
        ("csv", "text,label\ngood,1\nbad,0\nmeh,2\n"),
        ("tsv", "text\tlabel\ngood\t1\nbad\t0\nmeh\t2\n"),
        ("jsonl", '{"text": "good", "label": 1}\n{"text": "bad", "label": 0}\n{"text": "meh", "label": 2.0}\n'),
    ],
)
def test_int_labels_become_strings(tmp_path: Path, file_format: str, content: str) -> None:
    table = read_table(write_bytes(tmp_path / f"a.{file_format}", content), file_format, "text", "label")
    assert table.labels == ["1", "0", "2"]


@pytest.mark.parametrize("file_format", ["csv", "tsv"])
def test_bom_and_crlf(tmp_path: Path, file_format: str) -> None:
    sep = "," if file_format == "csv" else "\t"
    content = f"\ufefftext{sep}label\r\nfirst{sep}pos\r\nsecond{sep}neg\r\n"
    table = read_table(write_bytes(tmp_path / f"a.{file_format}", content), file_format, "text", "label")
    assert table.texts == ["first", "second"]
    assert table.labels == ["pos", "neg"]
    assert table.rows == [2, 3]


def test_jsonl_bom_and_crlf(tmp_path: Path) -> None:
    content = '\ufeff{"text": "first", "label": "pos"}\r\n{"text": "second", "label": "neg"}\r\n'
    table = read_table(write_bytes(tmp_path / "a.jsonl", content), "jsonl", "text", "label")
    assert (table.texts, table.labels) == (["first", "second"], ["pos", "neg"])


def test_custom_column_names(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "a.csv", "id,review,sentiment\n1,nice,positive\n2,awful,negative\n")
    table = read_table(path, "csv", "review", "sentiment")
    assert (table.texts, table.labels) == (["nice", "awful"], ["positive", "negative"])


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("texts.txt", "first text\r\n\nsecond, text\n", ["first text", "second, text"]),
        ("texts.csv", 'text\n"a, b"\nc\n', ["a, b", "c"]),
        ("texts.jsonl", '{"text": "a"}\n{"text": "b"}\n', ["a", "b"]),
    ],
)
def test_read_texts_file_without_labels(tmp_path: Path, name: str, content: str, expected: list[str]) -> None:
    assert read_texts_file(write_bytes(tmp_path / name, content), "text") == expected


IMDB_SPLITS = {
    "train": [("good film <br />", "pos"), ("bad film", "neg"), ("great", "pos"), ("awful", "neg"),
              ("fine", "pos"), ("meh", "neg"), ("caf\u00e9 r\u00e9sum\u00e9", "pos"), ("ok", "neg"),
              ("ten", "pos"), ("eleven", "neg"), ("twelve", "pos"), ("thirteen", "neg")],
    "test": [("nice", "pos"), ("boring", "neg")],
}


def test_imdb_tarball_reads_both_splits_in_official_order(tmp_path: Path) -> None:
    splits = read_imdb(write_imdb_tarball(tmp_path / "aclImdb_v1.tar.gz", IMDB_SPLITS))
    assert set(splits) == {"train", "test"}
    train = splits["train"]
    # neg before pos, then by numeric review id (10 after 8), regardless of the archive's order
    assert train.labels == ["neg"] * 6 + ["pos"] * 6
    assert train.texts == ["bad film", "awful", "meh", "ok", "eleven", "thirteen",
                           "good film <br />", "great", "fine", "caf\u00e9 r\u00e9sum\u00e9", "ten", "twelve"]
    assert (splits["test"].texts, splits["test"].labels) == (["boring", "nice"], ["neg", "pos"])
    assert "unlabelled review" not in train.texts  # aclImdb/train/unsup is not a class


def test_imdb_folder_gives_the_same_result_as_the_tarball(tmp_path: Path) -> None:
    from_tar = read_imdb(write_imdb_tarball(tmp_path / "aclImdb_v1.tar.gz", IMDB_SPLITS))
    folder = write_imdb_folder(tmp_path / "extracted", IMDB_SPLITS)
    for path in (folder, folder / "aclImdb"):  # the parent of aclImdb/ or aclImdb/ itself
        from_folder = read_imdb(path)
        for split in ("train", "test"):
            assert from_folder[split].texts == from_tar[split].texts
            assert from_folder[split].labels == from_tar[split].labels
