"""Streaming readers for CSV/TSV/JSONL (plain or gzip) and Parquet: one row at a time, with where it came from.

Nothing here holds a whole file: text files are decoded as a stream (gzip detected by its magic bytes, not its
name), Parquet files are read one row group at a time. Each reader yields (where, text value, label value);
`where` is a 1-based line number, or (row group, row) counted from 0 for Parquet, as pyarrow counts them.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from textclf_cli.errors import DataError

Where = int | tuple[int, int]
RawRow = tuple[Where, Any, Any]  # (where, text value, label value); a missing value is None

GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"
QUOTING_HINT = ('check the quoting: a text that starts with a quote or holds the delimiter must be quoted whole, '
                'with inner quotes doubled ("")')
DEFAULT_MAX_ROW_CHARS = 10_000_000  # data.max_row_chars: a long post is valid data, a 60 MB field is not a text
MAX_CSV_FIELD = min(sys.maxsize, 2**31 - 1)  # the largest value a C long takes everywhere (sys.maxsize overflows it)


def describe(path: Path | str, where: Where) -> str:
    """`file:line` for text files, `file: row group G, row R` for Parquet: the prefix of a row's message."""
    if isinstance(where, tuple):
        return f"{path}: row group {where[0]}, row {where[1]}"
    return f"{path}:{where}"


def short(where: Where) -> str:
    """A row's position inside a list that already names the file."""
    return f"{where[0]}/{where[1]}" if isinstance(where, tuple) else str(where)


@dataclass
class RawRows:
    """The rows of one file, read lazily; `fraction_done()` says how far into the file the reading got."""

    rows: Iterator[RawRow]
    fraction_done: Callable[[], float | None]


def open_rows(path: Path, file_format: str, text_column: str, label_column: str | None,
              encoding: str = "utf-8", max_row_chars: int = DEFAULT_MAX_ROW_CHARS) -> RawRows:
    """The rows of one file; a line or field over `max_row_chars` characters is a RowError, read past in
    pieces of that size, so one hostile row costs no more memory than that."""
    check_file(path)
    if file_format == "parquet":
        return _parquet_rows(path, text_column, label_column)
    with path.open("rb") as handle:
        if handle.read(4) == PARQUET_MAGIC:
            raise DataError(f"{path}: this is a Parquet file; set data.format: parquet (all data files share "
                            f"one format)")
    stream, raw = open_text(path, encoding)
    size = max(1, path.stat().st_size)
    fraction = lambda: 1.0 if raw.closed else min(1.0, raw.tell() / size)  # noqa: E731
    lines = BoundedLines(stream, max_row_chars)
    if file_format == "jsonl":
        rows = _jsonl_rows(lines, path, text_column, label_column)
    elif file_format == "txt":
        rows = _txt_rows(lines)
    else:
        rows = _delimited_rows(lines, path, "\t" if file_format == "tsv" else ",", text_column, label_column)
    return RawRows(_decoding_checked(rows, (stream, raw), path, encoding), fraction)


def check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: file not found; check data.train/data.valid/data.test in the config")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a {path.suffix or 'CSV/TSV/JSONL/Parquet'} file")


# ---------------------------------------------------------------------------------------------------------
# text files: CSV, TSV, JSONL, one text per line


def open_text(path: Path, encoding: str) -> tuple[io.TextIOWrapper, IO[bytes]]:
    """A decoded text stream of `path` (gunzipped when it is gzip), and the file under it (its position says
    how far the reading got; closing the stream leaves it open).

    Universal newlines: CRLF and CR line ends (also inside quoted texts) become LF; a UTF-8 BOM is dropped.
    """
    raw = path.open("rb")
    binary: IO[bytes] = gzip.GzipFile(fileobj=raw, mode="rb") if raw.read(2) == GZIP_MAGIC else raw
    raw.seek(0)
    try:
        stream = io.TextIOWrapper(binary, encoding=_codec(encoding), newline=None)  # type: ignore[arg-type]
    except LookupError:
        raw.close()
        raise DataError(f"{path}: unknown encoding {encoding!r} in data.encoding") from None
    return stream, raw


def _codec(encoding: str) -> str:
    return "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding


def _decoding_checked(rows: Iterator[RawRow], files: tuple[IO, IO], path: Path, encoding: str) -> Iterator[RawRow]:
    """Turn a decoding or decompression failure into a DataError naming the line, and close the file at the end."""
    try:
        yield from rows
    except UnicodeDecodeError as exc:
        line = locate_decode_error(path, encoding)
        where = describe(path, line) if line else str(path)
        raise DataError(f"{where}: not valid {encoding} ({exc.reason}); convert the file to UTF-8 or set "
                        f"data.encoding (e.g. latin-1)") from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: the gzip file is truncated or corrupt ({exc}); compress it again") from None
    finally:
        for handle in files:
            handle.close()


def locate_decode_error(path: Path, encoding: str) -> int | None:
    """The first line that does not decode (a second pass, only after a failure; line by line works for the
    ASCII-compatible encodings; for others such as UTF-16 the line is unknown)."""
    codec = _codec(encoding)
    if "\n".encode(codec, errors="ignore").lstrip(b"\xef\xbb\xbf") != b"\n":
        return None
    with path.open("rb") as raw:
        binary = gzip.GzipFile(fileobj=raw) if raw.read(2) == GZIP_MAGIC else raw
        raw.seek(0)
        for number, line in enumerate(binary, start=1):
            try:
                line.decode(codec)
            except UnicodeDecodeError:
                return number
    return None


class RowTooLong(Exception):
    """A line over the limit; BoundedLines has read past it, so reading goes on with the next line."""


class BoundedLines:
    """The lines of a text stream, each read with a size limit: a line over `limit` characters is read past in
    pieces of that size and raises RowTooLong (once), then the lines after it follow. `number` is the line last
    read, counted from 1. An iterator, not a generator: the csv module reads from it and goes on after a raise."""

    def __init__(self, stream: io.TextIOWrapper, limit: int) -> None:
        self.stream, self.limit, self.number = stream, limit, 0

    def __iter__(self) -> BoundedLines:
        return self

    def __next__(self) -> str:
        line = self.stream.readline(self.limit + 1)
        if not line:
            raise StopIteration
        self.number += 1
        if len(line) <= self.limit or (len(line) == self.limit + 1 and line.endswith("\n")):
            return line
        while (rest := self.stream.readline(self.limit + 1)) and not rest.endswith("\n"):
            pass
        raise RowTooLong()

    def too_long(self) -> RowError:
        return RowError(too_long_message(self.limit, "line"))


def too_long_message(limit: int, what: str) -> str:
    return (f"a {what} over {limit:,} characters (data.max_row_chars); shorten it, or raise data.max_row_chars "
            f"if such texts are meant")


def _txt_rows(lines: BoundedLines) -> Iterator[RawRow]:
    while True:
        try:
            line = next(lines)
        except StopIteration:
            return
        except RowTooLong:
            yield lines.number, lines.too_long(), None
            continue
        yield lines.number, line.rstrip("\n"), None


def _jsonl_rows(lines: BoundedLines, path: Path, text_column: str, label_column: str | None) -> Iterator[RawRow]:
    first, blank = True, True
    for number, line in _numbered(lines):
        if isinstance(line, RowError):
            blank = False
            yield number, line, None
            continue
        if not line.strip():
            continue
        blank = False
        record = _json_record(line)
        if isinstance(record, RowError):
            yield number, record, None
            continue
        if first:
            _require_columns(path, list(record), text_column, label_column)
            first = False
        yield number, record.get(text_column), record.get(label_column) if label_column is not None else None
    if blank:
        raise DataError(f"{path}: the file is empty; it needs one JSON object per line")


def _numbered(lines: BoundedLines) -> Iterator[tuple[int, str | RowError]]:
    while True:
        try:
            line = next(lines)
        except StopIteration:
            return
        except RowTooLong:
            yield lines.number, lines.too_long()
            continue
        yield lines.number, line


def _json_record(line: str) -> dict | RowError:
    """One JSONL line as an object, or why it is not one; hostile nesting and huge numbers are bad rows too."""
    try:
        record = json.loads(line.rstrip("\n"))
    except json.JSONDecodeError as exc:
        return RowError(f"malformed JSON ({exc.msg}); each line must be one JSON object")
    except RecursionError:
        return RowError("JSON nested too deeply to read; each line must be one flat JSON object")
    except ValueError as exc:  # an integer of more digits than Python converts (sys.get_int_max_str_digits)
        return RowError(f"unreadable JSON value ({str(exc).split(':')[0]}); write long numbers in quotes")
    if not isinstance(record, dict):
        return RowError(f"expected a JSON object per line, got {type(record).__name__}")
    return record


def _delimited_rows(lines: BoundedLines, path: Path, delimiter: str, text_column: str,
                    label_column: str | None) -> Iterator[RawRow]:
    # a quoted field may span lines: the csv module's own limit bounds it (process-wide, as the module keeps it)
    csv.field_size_limit(min(lines.limit, MAX_CSV_FIELD))
    reader = csv.reader(lines, delimiter=delimiter, quotechar='"', strict=True)
    try:
        header = [name.strip() for name in next(reader)]
    except StopIteration:
        raise DataError(f"{path}: the file is empty; it needs a header row and at least one example") from None
    except (csv.Error, RowTooLong) as exc:
        reason = too_long_message(lines.limit, "header") if isinstance(exc, RowTooLong) else exc
        raise DataError(f"{path}:1: malformed header ({reason})") from None
    _require_columns(path, header, text_column, label_column)
    text_at = header.index(text_column)
    label_at = header.index(label_column) if label_column is not None else None
    while True:
        line = lines.number + 1  # where this row starts (a quoted text may span several lines)
        try:
            row = next(reader)
        except StopIteration:
            return
        except RowTooLong:
            yield lines.number, lines.too_long(), None
            continue
        except csv.Error as exc:
            if "field limit" in str(exc):  # inside a quoted field that spans lines: the rest cannot be told apart
                yield line, RowError(too_long_message(lines.limit, "field") + "; the rest of the file was not read"), None
                return
            yield line, RowError(f"malformed row ({exc}); {QUOTING_HINT}"), None
            continue
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != len(header):
            yield line, RowError(f"{len(row)} fields but the header has {len(header)}; quote texts that contain "
                                 f"the delimiter"), None
            continue
        yield line, row[text_at], row[label_at] if label_at is not None else None


def _require_columns(path: Path, columns: list[str], text_column: str, label_column: str | None) -> None:
    for key, column in (("text_column", text_column), ("label_column", label_column)):
        if column is not None and column not in columns:
            raise DataError(
                f"{path}: no column {column!r} (data.{key}); the file has columns: {', '.join(map(str, columns))}"
            )


@dataclass(frozen=True)
class RowError:
    """A row that could not be read at all (malformed quoting or JSON); carried in place of its text."""

    message: str


# ---------------------------------------------------------------------------------------------------------
# Parquet


def _parquet_rows(path: Path, text_column: str, label_column: str | None) -> RawRows:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading Parquet needs pyarrow, which is not installed; install it with "
                        f"pip install 'textclf-cli[parquet]' (or pip install pyarrow)") from None
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
    _require_columns(path, parquet.schema_arrow.names, text_column, label_column)
    columns = [text_column] if label_column is None else [text_column, label_column]
    done = [0]

    def rows() -> Iterator[RawRow]:
        for group in range(parquet.num_row_groups):
            try:
                table = parquet.read_row_group(group, columns=columns)
            except (pa.ArrowException, OSError) as exc:
                raise DataError(f"{path}: row group {group} cannot be read ({exc})") from None
            texts = table.column(text_column).to_pylist()
            labels = table.column(label_column).to_pylist() if label_column is not None else [None] * len(texts)
            del table
            for row, (text, label) in enumerate(zip(texts, labels)):
                yield (group, row), text, label
            done[0] = group + 1

    return RawRows(rows(), lambda: done[0] / max(1, parquet.num_row_groups))
