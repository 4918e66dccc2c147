"""Raw labelled text from disk: the IMDb archive or folder, and CSV/TSV/JSONL/Parquet files read as streams."""

from __future__ import annotations

import json
import re
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from textclf_cli.console import log
from textclf_cli.data.tables import (
    DEFAULT_MAX_ROW_CHARS,
    RowError,
    Where,
    check_file,
    describe,
    open_rows,
    short,
    too_long_message,
)
from textclf_cli.errors import DataError

IMDB_MEMBER = re.compile(r"(?:^|/)aclImdb/(train|test)/(pos|neg)/(\d+)_(\d+)\.txt$")
IMDB_SPLITS = ("train", "test")
IMDB_URLS = re.compile(r"(?:^|/)aclImdb/(train|test)/urls_(pos|neg)\.txt$")
IMDB_MOVIE = re.compile(r"/title/(tt\d+)/")


@dataclass
class LabelledTexts:
    """Texts and their labels, in file order; `source` names the file for error messages.

    A label is a string, or for multi-label data a list of strings (possibly empty: none of the labels).
    """

    texts: list[str]
    labels: list[str] | list[list[str]]
    source: str
    rows: list[Where] = field(default_factory=list)  # the line (or Parquet row group, row) of each example
    groups: list[str] = field(default_factory=list)  # e.g. the IMDb movie of each review: valid never shares one

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def name(self) -> str:
        return self.source

    def fraction_done(self) -> float | None:
        return None

    def chunks(self, size: int) -> Iterator[TextChunk]:
        rows = self.rows or list(range(1, len(self) + 1))
        for start in range(0, len(self), size):
            stop = start + size
            yield TextChunk(self.texts[start:stop], self.labels[start:stop], rows[start:stop])


# ---------------------------------------------------------------------------------------------------------
# IMDb


def read_imdb(path: Path) -> dict[str, LabelledTexts]:
    """Both labelled splits of aclImdb, from the .tar.gz (one streaming pass) or an extracted folder."""
    urls: dict[tuple[str, str], list[str]] = {}  # (split, label) -> the movie URL of review id i
    if path.is_dir():
        found = _read_imdb_folder(path, urls)
    else:
        found = _read_imdb_tarball(path, urls)
    splits = {}
    for split in IMDB_SPLITS:
        items = sorted(found.get(split, []))  # (label, id, text): the official order, independent of tar order
        if not items:
            raise DataError(
                f"{path}: no aclImdb/{split}/pos or neg reviews found; expected the layout of aclImdb_v1.tar.gz"
            )
        splits[split] = LabelledTexts(
            texts=[text for _, _, text in items],
            labels=[label for label, _, _ in items],
            source=f"{path} ({split})",
            rows=list(range(1, len(items) + 1)),
            groups=_imdb_movies(items, urls, split),
        )
    return splits


def _imdb_movies(items: list[tuple[str, int, str]], urls: dict[tuple[str, str], list[str]], split: str) -> list[str]:
    """The movie id (tt...) of each review, from the archive's urls_*.txt; [] when those files are missing."""
    movies = []
    for label, review_id, _ in items:
        lines = urls.get((split, label), [])
        if review_id >= len(lines):
            return []
        match = IMDB_MOVIE.search(lines[review_id])
        movies.append(match.group(1) if match else lines[review_id].strip())
    return movies


def _url_lines(raw: bytes) -> list[str]:
    return raw.decode("utf-8", errors="replace").splitlines()


def _read_imdb_tarball(path: Path, urls: dict[tuple[str, str], list[str]]) -> dict[str, list[tuple[str, int, str]]]:
    found: dict[str, list[tuple[str, int, str]]] = {}
    unsafe: list[str] = []
    # "r|gz" streams: random access into a gzipped tar would re-decompress from the start for each member.
    # Nothing is ever extracted to disk: regular members are read into memory, everything else is skipped.
    try:
        with tarfile.open(path, mode="r|gz") as archive:
            for member in archive:
                if is_unsafe_member(member):
                    unsafe.append(member.name)
                    continue
                url_match = IMDB_URLS.search(member.name)
                if url_match and member.isfile():
                    handle = archive.extractfile(member)
                    urls[url_match.group(1), url_match.group(2)] = _url_lines(handle.read()) if handle else []
                    continue
                match = IMDB_MEMBER.search(member.name)
                if not match or not member.isfile():
                    continue
                handle = archive.extractfile(member)
                text = handle.read().decode("utf-8", errors="replace") if handle else ""
                split, label, review_id = match.group(1), match.group(2), int(match.group(3))
                found.setdefault(split, []).append((label, review_id, text))
    except FileNotFoundError:
        raise DataError(f"{path}: IMDb archive not found; set data.train to aclImdb_v1.tar.gz or its folder") from None
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DataError(
            f"{path}: the IMDb archive is truncated or corrupt ({exc}); download aclImdb_v1.tar.gz again"
        ) from None
    if unsafe:
        shown = ", ".join(repr(name) for name in unsafe[:5]) + (", ..." if len(unsafe) > 5 else "")
        log.warning(f"{path}: ignored {len(unsafe)} archive member(s) that are links or point outside the "
                    f"archive folder: {shown}; the official aclImdb_v1.tar.gz has none, so check where it came from")
    return found


def is_unsafe_member(member: tarfile.TarInfo) -> bool:
    """Links, devices, absolute names and `..` are what an extracting reader could be tricked by."""
    name = member.name.replace("\\", "/")
    parts = name.split("/")
    return (member.issym() or member.islnk() or member.isdev() or name.startswith("/") or ".." in parts
            or (len(parts[0]) == 2 and parts[0][1] == ":"))  # a Windows drive, C:


def _read_imdb_folder(path: Path, urls: dict[tuple[str, str], list[str]]) -> dict[str, list[tuple[str, int, str]]]:
    root = path / "aclImdb" if (path / "aclImdb").is_dir() else path
    found: dict[str, list[tuple[str, int, str]]] = {}
    for split in IMDB_SPLITS:
        for label in ("neg", "pos"):
            url_file = root / split / f"urls_{label}.txt"
            if url_file.is_file():
                urls[split, label] = _url_lines(url_file.read_bytes())
            for file in (root / split / label).glob("*_*.txt"):
                review_id = int(file.name.split("_", 1)[0])
                text = file.read_bytes().decode("utf-8", errors="replace")
                found.setdefault(split, []).append((label, review_id, text))
    return found


# ---------------------------------------------------------------------------------------------------------
# CSV / TSV / JSONL / Parquet, streamed

MAX_PROBLEMS = 10  # reading stops at this many fatal problems; the message lists them all
TABLE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}  # by suffix
JSON_TYPE_NAMES = {bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "an object"}


def format_of(path: Path) -> str | None:
    """csv/tsv/jsonl/parquet from the file name, else None; a trailing .gz is looked through (x.csv.gz is csv)."""
    suffixes = [suffix.lower() for suffix in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    return TABLE_FORMATS.get(suffixes[-1]) if suffixes else None


class BadRows:
    """The problems met while reading one file, reported together in one message.

    Unreadable rows and texts that are not strings are fatal; rows with an empty text or label are skipped
    (bad_rows: skip, one warning) or fatal too (bad_rows: error).
    """

    def __init__(self, path: Path, text_column: str, label_column: str | None, policy: str) -> None:
        self.path, self.text_column, self.label_column, self.policy = path, text_column, label_column, policy
        self.fatal: list[str] = []
        self.empty: list[Where] = []
        self.num_empty = 0

    def add_fatal(self, where: Where, message: str) -> None:
        self.fatal.append(f"{describe(self.path, where)}: {message}")

    def add_empty(self, where: Where) -> None:
        self.num_empty += 1
        if len(self.empty) < MAX_PROBLEMS:
            self.empty.append(where)

    @property
    def failed(self) -> bool:
        return bool(self.fatal) or (self.policy == "error" and self.num_empty > 0)

    @property
    def too_many(self) -> bool:
        return len(self.fatal) + (self.num_empty if self.policy == "error" else 0) >= MAX_PROBLEMS

    def finish(self, stopped_early: bool) -> None:
        """Raise one DataError naming every fatal problem (and the empty rows), or warn about skipped rows."""
        empty = self._empty_summary()
        if not self.failed:
            if empty:
                log.warning(f"{empty}; skipped (set data.bad_rows: error to refuse such files)")
            return
        lines = list(self.fatal)
        if empty:
            lines.append(f"{empty}; fix them or set data.bad_rows: skip" if self.policy == "error"
                         else f"{empty} (skipped under data.bad_rows: skip)")
        if stopped_early:
            lines.append(f"{self.path}: stopped reading after the first {MAX_PROBLEMS} problems; there may be more")
        raise DataError("\n".join(lines))

    def _empty_summary(self) -> str:
        if not self.num_empty:
            return ""
        parquet = isinstance(self.empty[0], tuple)
        shown = ", ".join(short(where) for where in self.empty) + (", ..." if self.num_empty > len(self.empty) else "")
        what = f"an empty {self.text_column!r}" + (f" or {self.label_column!r}" if self.label_column else "")
        at = "(row group/row)" if parquet else "at line(s)"
        return f"{self.path}: {self.num_empty} row(s) with {what} {at} {shown}"


@dataclass
class TextChunk:
    """Consecutive usable rows of one file: texts, their labels ("" without a label column) and positions."""

    texts: list[str]
    labels: list[str] | list[list[str]]  # multilabel: each a list of labels (possibly empty)
    wheres: list[Where]

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class TableLayout:
    """How to read a table file: its format, the columns holding text and label, and what to do with bad rows."""

    file_format: str  # csv, tsv, jsonl or parquet
    text_column: str
    label_column: str | None  # None: texts only (predict --input)
    encoding: str = "utf-8"
    bad_rows: str = "skip"
    label_separator: str | None = None  # set for multi-label data: each label is then a list
    max_row_chars: int = DEFAULT_MAX_ROW_CHARS


class TableSource:
    """The usable (text, label) rows of one CSV/TSV/JSONL/Parquet file (plain or .gz), streamed.

    Rows with problems are collected and reported when the file ends. After the first fatal problem no more rows
    are handed out (there is no point tokenizing them), but reading goes on to name the next few problems too.
    """

    def __init__(self, path: Path, layout: TableLayout) -> None:
        self.path, self.layout = path, layout
        self.name = str(path)
        self.groups: list[str] = []  # no grouping of rows for the validation split
        self.num_skipped = 0  # rows skipped for an empty text or label, once read (textclf check reports them)
        self._fraction: Callable[[], float | None] = lambda: 0.0

    def fraction_done(self) -> float | None:
        return self._fraction()

    def rows(self) -> Iterator[tuple[Where, str, str | list[str]]]:
        raw = open_rows(self.path, self.layout.file_format, self.layout.text_column, self.layout.label_column, self.layout.encoding,
                        self.layout.max_row_chars)
        self._fraction = raw.fraction_done
        problems = BadRows(self.path, self.layout.text_column, self.layout.label_column, self.layout.bad_rows)
        usable, stopped_early = 0, False
        for where, text_value, label_value in raw.rows:
            text = self._text(where, text_value, problems)
            label = self._label(where, label_value, problems) if text is not None else None
            if text is not None and label is None:
                text = None
            if problems.too_many:
                stopped_early = True
                break
            if text is None or problems.failed:
                continue
            usable += 1
            yield where, text, label
        self.num_skipped = problems.num_empty
        problems.finish(stopped_early)
        if not usable:
            raise DataError(f"{self.path}: no usable examples (every row has an empty text or label)")

    def _label(self, where: Where, value: object, problems: BadRows) -> str | list[str] | None:
        """The row's label ("" without a label column; a list for multi-label data), or None if unusable."""
        if self.layout.label_column is None:
            return ""
        if self.layout.label_separator is None:
            label = _as_text(value).strip()
        else:
            try:
                label = label_set(value, self.layout.label_separator, describe(self.path, where))
            except DataError as exc:
                problems.fatal.append(str(exc))
                return None
        if label is None or label == "":  # an empty multi-label list is a valid empty label set
            problems.add_empty(where)
            return None
        return label

    def _text(self, where: Where, value: object, problems: BadRows) -> str | None:
        if isinstance(value, RowError):
            problems.add_fatal(where, value.message)
            return None
        if value is None or (isinstance(value, str) and not value.strip()):
            problems.add_empty(where)
            return None
        if not isinstance(value, str):
            kind = JSON_TYPE_NAMES.get(type(value), type(value).__name__)
            fix = ("store the column as strings" if self.layout.file_format == "parquet"
                   else "write it in quotes if it is meant as text")
            problems.add_fatal(where, f"{self.layout.text_column!r} is {kind} ({_clip(repr(value))}), not a string; {fix}")
            return None
        if len(value) > self.layout.max_row_chars:  # Parquet: pyarrow reads whole row groups, the text files are bounded
            problems.add_fatal(where, too_long_message(self.layout.max_row_chars, f"{self.layout.text_column!r} text"))
            return None
        return value

    def chunks(self, size: int) -> Iterator[TextChunk]:
        chunk = TextChunk([], [], [])
        for where, text, label in self.rows():
            chunk.texts.append(text)
            chunk.labels.append(label)
            chunk.wheres.append(where)
            if len(chunk) >= size:
                yield chunk
                chunk = TextChunk([], [], [])
        if chunk.texts:
            yield chunk


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def label_set(value: object, separator: str, where: str) -> list[str] | None:
    """A multi-label row's labels: a JSON list, or a string split on `separator`; None when missing (null).

    Labels are stripped, empty ones dropped and repeats removed, keeping their first-seen order.
    """
    if value is None:
        return None
    if isinstance(value, list):
        if any(isinstance(item, (list, dict)) or item is None for item in value):
            raise DataError(f"{where}: a label list may hold only strings and numbers, got {json.dumps(value)[:80]}")
        parts = [_as_text(item) for item in value]
        joined = next((part for part in parts if separator in part), None)
        if joined is not None:  # CSV output joins a text's labels with the separator: it would read back as two
            raise DataError(f"{where}: label {_clip(joined)!r} contains data.label_separator {separator!r}; rename "
                            f"the label, or set data.label_separator to a character no label holds")
    elif isinstance(value, dict):
        raise DataError(f"{where}: labels must be a list or a {separator!r}-separated string, got a JSON object")
    else:
        parts = _as_text(value).split(separator)
    return list(dict.fromkeys(part.strip() for part in parts if part.strip()))


def _as_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def read_table(
    path: Path,
    file_format: str,
    text_column: str,
    label_column: str | None,
    encoding: str = "utf-8",
    bad_rows: str = "skip",
    label_separator: str | None = None,
    max_row_chars: int = DEFAULT_MAX_ROW_CHARS,
) -> LabelledTexts:
    """All usable rows of a (small) CSV/TSV/JSONL/Parquet file in memory; large files go through TableSource.

    With a `label_separator` (multi-label data) each label is a list: a JSON list, or a string split on the
    separator; an empty list or string is a valid empty label set, a missing (null) one is an empty row.
    """
    layout = TableLayout(file_format, text_column, label_column, encoding, bad_rows, label_separator, max_row_chars)
    return read_all(TableSource(path, layout))


def read_all(source: TableSource) -> LabelledTexts:
    """Every usable row of a table source, in memory."""
    texts, labels, rows = [], [], []
    for where, text, label in source.rows():
        texts.append(text)
        labels.append(label)
        rows.append(where)
    return LabelledTexts(texts=texts, labels=labels, source=str(source.path), rows=rows)


def iter_texts_file(path: Path, text_column: str, encoding: str = "utf-8") -> Iterator[str]:
    """Texts to predict, streamed: a .txt (one per line, blank lines skipped; also any unknown suffix), or a
    CSV/TSV/JSONL/Parquet (plain or .gz) with a text column (empty texts skipped with a warning)."""
    file_format = format_of(path) or "txt"
    if file_format == "txt":
        check_file(path)
        for line, text, _ in open_rows(path, "txt", text_column, None, encoding).rows:
            if isinstance(text, RowError):
                raise DataError(f"{describe(path, line)}: {text.message}")
            if text.strip():
                yield text
        return
    for _, text, _ in TableSource(path, TableLayout(file_format, text_column, None, encoding)).rows():
        yield text
