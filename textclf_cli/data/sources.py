"""Raw labelled text from disk: the IMDb archive or folder, and CSV/TSV/JSONL files."""

from __future__ import annotations

import csv
import io
import json
import re
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from textclf_cli.console import log
from textclf_cli.errors import DataError

IMDB_MEMBER = re.compile(r"(?:^|/)aclImdb/(train|test)/(pos|neg)/(\d+)_(\d+)\.txt$")
IMDB_SPLITS = ("train", "test")
IMDB_URLS = re.compile(r"(?:^|/)aclImdb/(train|test)/urls_(pos|neg)\.txt$")
IMDB_MOVIE = re.compile(r"/title/(tt\d+)/")
TABLE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}  # file suffix -> reader format


@dataclass
class LabelledTexts:
    """Texts and their labels, in file order; `source` names the file for error messages.

    A label is a string, or for multi-label data a list of strings (possibly empty: none of the labels).
    """

    texts: list[str]
    labels: list[str] | list[list[str]]
    source: str
    rows: list[int] = field(default_factory=list)  # 1-based row/line of each example in `source`
    groups: list[str] = field(default_factory=list)  # e.g. the IMDb movie of each review: valid never shares one

    def __len__(self) -> int:
        return len(self.texts)


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
# CSV / TSV / JSONL


def read_table(
    path: Path,
    file_format: str,
    text_column: str,
    label_column: str | None,
    encoding: str = "utf-8",
    bad_rows: str = "skip",
    label_separator: str | None = None,
) -> LabelledTexts:
    """Text (and label, unless `label_column` is None) columns of a CSV/TSV/JSONL file.

    Rows with an empty text or a missing label are skipped with one warning naming them (bad_rows=skip)
    or refused (bad_rows=error). With a `label_separator` (multi-label data) each label is a list: a JSON
    list, or a string split on the separator; an empty list or string is a valid empty label set.
    """
    content = _read_text(path, encoding)
    if file_format == "jsonl":
        records = _parse_jsonl(content, path)
    else:
        records = _parse_delimited(content, path, "\t" if file_format == "tsv" else ",")
    return _select_columns(records, path, text_column, label_column, bad_rows, label_separator)


def _read_text(path: Path, encoding: str) -> str:
    if not path.exists():
        raise DataError(f"{path}: file not found; check data.train/data.valid/data.test in the config")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a {path.suffix or 'CSV/TSV/JSONL'} file")
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path}: the file is empty; it needs a header row and at least one example")
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        text = raw.decode(codec)
    except LookupError:
        raise DataError(f"{path}: unknown encoding {encoding!r} in data.encoding") from None
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path}:{line}: not valid {encoding} ({exc.reason}); convert the file to UTF-8 or set "
            f"data.encoding (e.g. latin-1)"
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _parse_jsonl(content: str, path: Path) -> list[tuple[int, dict]]:
    records = []
    for number, line in enumerate(content.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: malformed JSON ({exc.msg}); each line must be one JSON object") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{number}: expected a JSON object per line, got {type(record).__name__}")
        records.append((number, record))
    return records


def _parse_delimited(content: str, path: Path, delimiter: str) -> list[tuple[int, dict]]:
    reader = csv.reader(io.StringIO(content, newline=""), delimiter=delimiter, quotechar='"', strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{path}: the file is empty; it needs a header row") from None
    except csv.Error as exc:
        raise DataError(f"{path}:1: malformed header ({exc})") from None
    header = [name.strip() for name in header]
    records = []
    while True:
        line = reader.line_num + 1  # where this row starts (a quoted text may span several lines)
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise DataError(f"{path}:{line}: malformed row ({exc}); check the quoting: a text that starts with "
                            f'a quote or holds the delimiter must be quoted whole, with inner quotes doubled ("")') from None
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != len(header):
            raise DataError(
                f"{path}:{line}: {len(row)} fields but the header has {len(header)}; "
                f"quote texts that contain the delimiter"
            )
        records.append((line, dict(zip(header, row))))
    return records


def _select_columns(
    records: list[tuple[int, dict]], path: Path, text_column: str, label_column: str | None, bad_rows: str,
    label_separator: str | None = None,
) -> LabelledTexts:
    columns = list(records[0][1]) if records else []
    for key, column in (("text_column", text_column), ("label_column", label_column)):
        if column is not None and records and column not in columns:
            raise DataError(
                f"{path}: no column {column!r} (data.{key}); the file has columns: {', '.join(map(str, columns))}"
            )
    texts, labels, rows, bad = [], [], [], []
    for line, record in records:
        text = _as_text(record.get(text_column))
        if label_separator is not None and label_column is not None:
            label: str | list[str] | None = label_set(record.get(label_column), label_separator, f"{path}:{line}")
            missing = label is None
        else:
            label = _as_text(record.get(label_column)).strip() if label_column is not None else ""
            missing = label_column is not None and not label
        if not text.strip() or missing:
            bad.append(line)
            continue
        texts.append(text)
        labels.append(label)
        rows.append(line)
    _report_bad_rows(path, bad, bad_rows, text_column, label_column)
    if not texts:
        raise DataError(f"{path}: no usable examples (every row has an empty text or label)")
    return LabelledTexts(texts=texts, labels=labels, source=str(path), rows=rows)


def _report_bad_rows(path: Path, bad: list[int], policy: str, text_column: str, label_column: str | None) -> None:
    if not bad:
        return
    shown = ", ".join(str(line) for line in bad[:10]) + (", ..." if len(bad) > 10 else "")
    what = f"an empty {text_column!r}" + (f" or {label_column!r}" if label_column else "")
    message = f"{path}: {len(bad)} row(s) with {what} at line(s) {shown}"
    if policy == "error":
        raise DataError(f"{message}; fix them or set data.bad_rows: skip")
    log.warning(f"{message}; skipped (set data.bad_rows: error to refuse such files)")


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


def read_texts_file(path: Path, text_column: str, encoding: str = "utf-8") -> list[str]:
    """Texts to predict: a .txt (one per line), or a CSV/TSV/JSONL with a text column."""
    file_format = TABLE_FORMATS.get(path.suffix.lower())
    if file_format is not None:
        return read_table(path, file_format, text_column, None, encoding).texts
    content = _read_text(path, encoding)
    return [line for line in content.split("\n") if line.strip()]
