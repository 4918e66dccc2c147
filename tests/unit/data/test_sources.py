"""data/sources.py: CSV/TSV/JSONL quoting, BOM, CRLF, label types; the aclImdb archive and folder."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import write_imdb_folder, write_imdb_tarball
from textclf_cli.data.sources import iter_texts_file, read_imdb, read_table
from textclf_cli.errors import DataError


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
def test_texts_file_without_labels(tmp_path: Path, name: str, content: str, expected: list[str]) -> None:
    assert list(iter_texts_file(write_bytes(tmp_path / name, content), "text")) == expected


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


# ---------------------------------------------------------------------------------------------------------
# streaming: long fields, gzip, Parquet, problems reported together


def test_csv_field_longer_than_the_csv_modules_default_limit(tmp_path: Path) -> None:
    import pandas as pd

    long_text = "word, \"quoted\"\nnext line " * 16_000  # 160,000 characters, over csv's 131,072 default
    path = tmp_path / "long.csv"
    pd.DataFrame({"text": [long_text, "short"], "label": ["a", "b"]}).to_csv(path, index=False)
    table = read_table(path, "csv", "text", "label")
    assert table.texts == [long_text, "short"] and len(table.texts[0]) > 131_072
    assert table.rows == [2, 2 + long_text.count("\n") + 1]


@pytest.mark.parametrize(("file_format", "content"), [
    ("csv", 'text,label\n"a, b",pos\r\n"two\nlines",neg\n'),
    ("tsv", "text\tlabel\na, b\tpos\n\"two\nlines\"\tneg\n"),
    ("jsonl", '{"text": "a, b", "label": "pos"}\n\n{"text": "two\\nlines", "label": "neg"}\n'),
])
def test_gzip_files_read_like_plain_ones(tmp_path: Path, file_format: str, content: str) -> None:
    import gzip

    plain = write_bytes(tmp_path / f"a.{file_format}", content)
    packed = write_bytes(tmp_path / f"a.{file_format}.gz", gzip.compress(content.encode("utf-8")))
    from_plain, from_gzip = (read_table(path, file_format, "text", "label") for path in (plain, packed))
    assert from_gzip.texts == from_plain.texts == ["a, b", "two\nlines"]
    assert (from_gzip.labels, from_gzip.rows) == (from_plain.labels, from_plain.rows)
    assert list(iter_texts_file(packed, "text")) == ["a, b", "two\nlines"]


def test_gzip_decoding_error_names_its_line(tmp_path: Path) -> None:
    import gzip

    content = b"text,label\ngood,pos\n" + "caf\xe9,neg\n".encode("latin-1")
    path = write_bytes(tmp_path / "a.csv.gz", gzip.compress(content))
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:3: not valid utf-8"):
        read_table(path, "csv", "text", "label")


def test_truncated_gzip_is_a_data_error(tmp_path: Path) -> None:
    import gzip

    packed = gzip.compress(("text,label\n" + "some words,pos\n" * 2000).encode())
    path = write_bytes(tmp_path / "a.csv.gz", packed[: len(packed) // 2])
    with pytest.raises(DataError, match="gzip file is truncated or corrupt"):
        read_table(path, "csv", "text", "label")


def write_parquet(path: Path, columns: dict, row_group_size: int) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)
    return path


def test_parquet_is_read_by_row_groups_and_bad_rows_name_group_and_row(tmp_path: Path) -> None:
    texts = ["one", None, "three", "  ", "five"]
    path = write_parquet(tmp_path / "a.parquet", {"text": texts, "label": [1, 0, 1, 0, 1]}, row_group_size=2)
    table = read_table(path, "parquet", "text", "label")
    assert (table.texts, table.labels) == (["one", "three", "five"], ["1", "1", "1"])
    assert table.rows == [(0, 0), (1, 0), (2, 0)]
    with pytest.raises(DataError) as caught:
        read_table(path, "parquet", "text", "label", bad_rows="error")
    assert str(caught.value) == (f"{path}: 2 row(s) with an empty 'text' or 'label' (row group/row) 0/1, 1/1; "
                                 f"fix them or set data.bad_rows: skip")


def test_parquet_text_column_of_numbers_is_refused(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "a.parquet", {"text": [4, 2], "label": ["a", "b"]}, row_group_size=1)
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: row group 0, row 0: 'text' is a number \(4\), "
                                         r"not a string; store the column as strings\n"):
        read_table(path, "parquet", "text", "label")


def test_parquet_without_pyarrow_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    path = write_parquet(tmp_path / "a.parquet", {"text": ["x"], "label": ["a"]}, row_group_size=1)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(DataError, match=r"reading Parquet needs pyarrow.*pip install 'textclf-cli\[parquet\]'"):
        read_table(path, "parquet", "text", "label")


@pytest.mark.parametrize(("value", "kind"), [("42", "a number"), ("true", "a boolean"), ('["a"]', "a list"),
                                             ('{"a": 1}', "an object")])
def test_jsonl_text_that_is_not_a_string_is_an_error_naming_its_line(tmp_path: Path, value: str, kind: str) -> None:
    path = write_bytes(tmp_path / "a.jsonl", f'{{"text": "fine", "label": "a"}}\n{{"text": {value}, "label": "b"}}\n')
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:2: 'text' is {kind} \("):
        read_table(path, "jsonl", "text", "label")


def test_every_problem_is_named_in_one_message_with_the_skipped_rows(tmp_path: Path) -> None:
    lines = ['{"text": null, "label": "a"}', '{"label": "b"}', '{"text": "ok", "label": "a"}', '{"text": 42, "label": "a"}',
             '{"text": "ok", "label": "b"}', '{"text": "broken', '{"text": "ok", "label": "b"}']
    path = write_bytes(tmp_path / "a.jsonl", "\n".join(lines) + "\n")
    with pytest.raises(DataError) as caught:
        read_table(path, "jsonl", "text", "label")
    assert str(caught.value).splitlines() == [
        f"{path}:4: 'text' is a number (42), not a string; write it in quotes if it is meant as text",
        f"{path}:6: malformed JSON (Unterminated string starting at); each line must be one JSON object",
        f"{path}: 2 row(s) with an empty 'text' or 'label' at line(s) 1, 2 (skipped under data.bad_rows: skip)",
    ]


def test_reading_stops_after_the_first_ten_problems(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "a.csv", "text,label\n" + "a,b,c\n" * 50)
    with pytest.raises(DataError) as caught:
        read_table(path, "csv", "text", "label")
    lines = str(caught.value).splitlines()
    assert lines[0] == f"{path}:2: 3 fields but the header has 2; quote texts that contain the delimiter"
    assert len(lines) == 11 and lines[9].startswith(f"{path}:11: 3 fields")
    assert lines[10] == f"{path}: stopped reading after the first 10 problems; there may be more"


def test_a_bad_quote_is_blamed_on_quoting_but_a_long_field_is_not(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "a.csv", 'text,label\n"good" text,pos\n')
    with pytest.raises(DataError, match=r":2: malformed row .*check the quoting"):
        read_table(path, "csv", "text", "label")


@pytest.mark.parametrize(("row", "expected"), [
    ('{"text": ' + "[" * 100_000 + "]" * 100_000 + ', "label": "pos"}',
     "JSON nested too deeply to read; each line must be one flat JSON object"),
    ('{"text": "ok", "label": ' + "7" * 5000 + "}",
     "unreadable JSON value (Exceeds the limit (4300 digits) for integer string conversion); write long numbers in "
     "quotes"),
], ids=["nested-100000-deep", "5000-digit-number"])
def test_hostile_jsonl_rows_are_bad_rows_at_their_line(tmp_path: Path, row: str, expected: str) -> None:
    # before: the whole read ended in RecursionError / ValueError, an internal error
    path = write_bytes(tmp_path / "a.jsonl", '{"text": "fine", "label": "pos"}\n' + row + '\n'
                                             '{"text": "also fine", "label": "neg"}\n')
    with pytest.raises(DataError) as caught:
        read_table(path, "jsonl", "text", "label")
    assert str(caught.value) == f"{path}:2: {expected}"


@pytest.mark.parametrize(("file_format", "content", "where", "what"), [
    ("csv", "text,label\nshort,pos\n" + "x" * 5000 + ",neg\nalso short,neg\n", 3, "line"),
    ("csv", 'text,label\nshort,pos\n"' + "x\n" * 2000 + '",neg\nalso short,neg\n', 3, "field"),  # quoted, many lines
    ("tsv", "text\tlabel\nshort\tpos\n" + "x" * 5000 + "\tneg\nalso short\tneg\n", 3, "line"),
    ("jsonl", '{"text": "short", "label": "pos"}\n{"text": "' + "x" * 5000 + '", "label": "neg"}\n', 2, "line"),
], ids=["csv-line", "csv-field", "tsv-line", "jsonl-line"])
def test_a_row_over_max_row_chars_is_a_bad_row_at_its_line(tmp_path: Path, file_format: str, content: str,
                                                            where: int, what: str) -> None:
    path = write_bytes(tmp_path / f"a.{file_format}", content)
    with pytest.raises(DataError) as caught:
        read_table(path, file_format, "text", "label", max_row_chars=1000)
    rest = "; the rest of the file was not read" if what == "field" else ""
    assert str(caught.value) == (f"{path}:{where}: a {what} over 1,000 characters (data.max_row_chars); shorten it, "
                                 f"or raise data.max_row_chars if such texts are meant{rest}")


def test_the_rows_after_a_long_line_are_read_with_their_own_line_numbers(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "a.csv", "text,label\n" + "x" * 5000 + ",neg\n" + "bad,row,here\n")
    with pytest.raises(DataError) as caught:
        read_table(path, "csv", "text", "label", max_row_chars=1000)
    assert str(caught.value).splitlines() == [
        f"{path}:2: a line over 1,000 characters (data.max_row_chars); shorten it, or raise data.max_row_chars if "
        f"such texts are meant",
        f"{path}:3: 3 fields but the header has 2; quote texts that contain the delimiter"]


def test_a_huge_field_in_a_small_gzip_costs_memory_of_the_limit_not_of_the_field(tmp_path: Path) -> None:
    import gzip
    import tracemalloc

    path = tmp_path / "bomb.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:  # 60 MB of one field, about 60 KB on disk
        handle.write("text,label\nfine,pos\n" + "a" * 60_000_000 + ",neg\nalso fine,neg\n")
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"bomb.csv.gz:3: a line over 1,000,000 characters"):
            read_table(path, "csv", "text", "label", max_row_chars=1_000_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000, f"peak {peak:,} bytes"


def test_a_multilabel_label_holding_the_separator_is_refused_naming_its_row(tmp_path: Path) -> None:
    # CSV output joins a text's labels with the separator: ["a|b"] would come back as two labels
    path = write_bytes(tmp_path / "a.jsonl", '{"text": "one", "labels": ["sports"]}\n'
                                             '{"text": "two", "labels": ["sports|news", "world"]}\n')
    with pytest.raises(DataError) as caught:
        read_table(path, "jsonl", "text", "labels", label_separator="|")
    assert str(caught.value) == (f"{path}:2: label 'sports|news' contains data.label_separator '|'; rename the "
                                 f"label, or set data.label_separator to a character no label holds")
