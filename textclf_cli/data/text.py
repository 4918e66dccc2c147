"""Cleaning and nltk tokenization; picklable so it runs in a process pool over all cores, chunk by chunk."""

from __future__ import annotations

import html
import os
import re
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from textclf_cli.data.vocab import encode
from textclf_cli.errors import ConfigError, TextclfError

if TYPE_CHECKING:  # the executor imports multiprocessing: only when a pool starts, not on every predict
    from concurrent.futures import Future, ProcessPoolExecutor

HTML_TAG = re.compile(r"<[^>]{0,200}>")
HAS_WORD_CHAR = re.compile(r"\w")
WORD_OR_PUNCT = r"\w+(?:'\w+)?|[^\w\s]"
NLTK_REGEXP_FLAGS = re.UNICODE | re.MULTILINE | re.DOTALL  # RegexpTokenizer's defaults
PARALLEL_MIN_TEXTS = 2000  # below this a process pool costs more than it saves
WORKER_DIED = ("a tokenizer worker process was killed (most likely by the out-of-memory killer, or by a signal "
               "such as SIGKILL); nothing was written: free memory, or lower data.chunk_size, and run again")


@dataclass(frozen=True)
class TokenizerSettings:
    """Everything that decides which tokens a text becomes; stored in every checkpoint."""

    kind: str = "toktok"
    lowercase: bool = True
    strip_html: bool = True
    strip_punctuation: bool = False
    remove_stopwords: bool = False
    stopwords: str = "sklearn"

    def to_dict(self) -> dict:
        return asdict(self)


class Tokenizer:
    """text -> list of tokens, following TokenizerSettings."""

    def __init__(self, settings: TokenizerSettings) -> None:
        self.settings = settings
        self._split = _make_splitter(settings.kind)
        self._stopwords = _load_stopwords(settings.stopwords) if settings.remove_stopwords else frozenset()

    def __call__(self, text: str) -> list[str]:
        settings = self.settings
        if settings.strip_html:
            text = html.unescape(HTML_TAG.sub(" ", text))
        if settings.lowercase:
            text = text.lower()
        tokens = self._split(text)
        if settings.strip_punctuation:
            tokens = [token for token in tokens if HAS_WORD_CHAR.search(token)]
        if self._stopwords:
            tokens = [token for token in tokens if token.lower() not in self._stopwords]
        return tokens


def _import_nltk() -> None:
    """Import nltk with scipy.stats and scikit-learn hidden: its __init__ imports them (under `except ImportError`)
    for collocation statistics and classifier wrappers that tokenizers never use; they stay importable afterwards."""
    # spares every cold predict those two imports; bench/RESULTS.md "Cold-start tricks (layout session)" has the figure
    if "nltk" in sys.modules:
        return
    hidden = {name: sys.modules.get(name) for name in ("scipy.stats", "scipy.stats.stats", "sklearn")}
    if any(module is not None for module in hidden.values()):  # already loaded: nothing to save
        import nltk  # noqa: F401

        return
    sys.modules.update(dict.fromkeys(hidden))  # a None entry makes `import scipy.stats` raise ImportError
    try:
        import nltk  # noqa: F401
    finally:
        for name in hidden:
            sys.modules.pop(name, None)


def _make_splitter(kind: str) -> Callable[[str], list[str]]:
    if kind == "regexp":
        return _regexp_splitter()
    _import_nltk()
    if kind == "toktok":
        from nltk.tokenize.toktok import ToktokTokenizer

        return _without_toktok_escapes(ToktokTokenizer().tokenize)
    if kind == "treebank":
        from nltk.tokenize import word_tokenize

        return lambda text: word_tokenize(text, preserve_line=True)
    if kind == "punkt":
        _require_nltk_resource("tokenizers/punkt_tab", "punkt_tab", "tokenizer.kind: punkt")
        from nltk.tokenize import word_tokenize

        return word_tokenize
    raise ConfigError(f"tokenizer.kind: unknown tokenizer {kind!r}; allowed: regexp, toktok, treebank, punkt")


def _regexp_splitter() -> Callable[[str], list[str]]:
    """The same tokens as nltk's RegexpTokenizer(WORD_OR_PUNCT), faster and without importing nltk.

    nltk compiles the pattern with the `regex` engine and these flags, and runs every match under a
    wall-clock timeout (a guard against caller-supplied patterns); ours is fixed and linear, so we call the
    same engine directly. Not the stdlib `re`: its \\w also matches numeric symbols such as "½" and "³", which
    would change tokens (nltk splits "7½" into "7" and "½"; `re` keeps one token).
    """
    import regex

    return regex.compile(WORD_OR_PUNCT, NLTK_REGEXP_FLAGS).findall


def _without_toktok_escapes(tokenize: Callable[[str], list[str]]) -> Callable[[str], list[str]]:
    # Toktok writes "& ", "|" and tabs as the entities &amp; &#124; &#9;, which would undo strip_html's unescaping
    # and survive strip_punctuation ("amp" is a word); tabs become spaces, the others get their character back.
    def split(text: str) -> list[str]:
        return [html.unescape(token) if "&" in token else token for token in tokenize(text.replace("\t", " "))]

    return split


def _load_stopwords(source: str) -> frozenset[str]:
    if source == "nltk":
        _require_nltk_resource("corpora/stopwords", "stopwords", "tokenizer.stopwords: nltk")
        from nltk.corpus import stopwords

        return frozenset(stopwords.words("english"))
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


def _require_nltk_resource(resource: str, package: str, option: str) -> None:
    import nltk

    try:
        nltk.data.find(resource)
    except LookupError:
        raise ConfigError(
            f"{option} needs the nltk data package {package!r}, which is not installed; install it with "
            f"`python -m nltk.downloader {package}` (or pick tokenizer.kind: toktok / tokenizer.stopwords: sklearn)"
        ) from None


def tokenize_and_encode(
    texts: list[str], settings: TokenizerSettings, index: dict[str, int], workers: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Token ids (flat) and offsets of many texts, for a known vocabulary (evaluate/predict)."""
    size = max(PARALLEL_MIN_TEXTS, -(-len(texts) // ((workers or os.cpu_count() or 1) * 4)))
    ids_parts, length_parts = [np.zeros(0, dtype=np.int32)], [np.zeros(0, dtype=np.int64)]
    with ChunkTokenizer(settings, index, workers) as tokenizer:
        chunks = (texts[start: start + size] for start in range(0, len(texts), size))
        for _, (ids, lengths) in tokenizer.map(encode_chunk, chunks):
            ids_parts.append(ids)
            length_parts.append(lengths)
    lengths = np.concatenate(length_parts)
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return np.concatenate(ids_parts), offsets


Chunk = TypeVar("Chunk", bound=Sized)


class ChunkTokenizer:
    """Runs count_chunk or encode_chunk over a stream of chunks of texts and hands the results back in input
    order, with only a few chunks in flight so that memory stays bounded however long the stream is.

    Small inputs run in this process; a pool of worker processes is started (once) as soon as the texts seen
    reach PARALLEL_MIN_TEXTS. Workers send back id arrays rather than token lists: pickling millions of strings
    back to the parent would cost about as much as tokenizing them.
    """

    def __init__(self, settings: TokenizerSettings, index: dict[str, int] | None = None,
                 workers: int | None = None) -> None:
        self.settings, self.index = settings, index
        self.workers = workers or os.cpu_count() or 1
        self.tokenizer = Tokenizer(settings)  # here first: a bad setting fails now, not in every worker
        self._pool = None
        self._seen = 0

    def __enter__(self) -> ChunkTokenizer:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if self._pool is not None:
            if exc_type is None:
                self._pool.shutdown(wait=True)
            else:
                _stop(self._pool)  # an error or Ctrl-C: do not wait for chunks nobody will read
            self._pool = None

    def map(self, function: Callable, chunks: Iterable[Chunk]) -> Iterator[tuple[Chunk, Any]]:
        """(chunk, function(tokenizer, index, texts of chunk)) for each chunk, in order.

        A chunk is a list of texts or anything with a `texts` list. A worker that dies (the out-of-memory
        killer, a SIGKILL) ends the map with a TextclfError at once, never a wait for a result that cannot come.
        """
        pending: deque[tuple[Chunk, Future]] = deque()
        for chunk in chunks:
            texts = getattr(chunk, "texts", chunk)
            self._seen += len(texts)
            if self._pool is None and self.workers > 1 and self._seen >= PARALLEL_MIN_TEXTS:
                self._pool = _pool(self.workers, self.settings, self.index)
            if self._pool is None:
                yield chunk, function(self.tokenizer, self.index, texts)
                continue
            pending.append((chunk, _submit(self._pool, function, texts)))
            while len(pending) > 2 * self.workers:  # enough to keep every worker busy, no more
                done, result = pending.popleft()
                yield done, _result(result)
        while pending:
            done, result = pending.popleft()
            yield done, _result(result)


def _submit(pool: ProcessPoolExecutor, function: Callable, texts: list[str]) -> Future:
    from concurrent.futures import BrokenExecutor  # BrokenProcessPool's base, without importing the process module

    try:
        return pool.submit(_run_in_worker, function, texts)
    except BrokenExecutor:
        raise TextclfError(WORKER_DIED) from None
    except OSError:  # a submit racing the pool's breakdown meets its closed wake-up pipe ("handle is closed")
        if getattr(pool, "_broken", False):
            raise TextclfError(WORKER_DIED) from None
        raise


def _result(future: Future) -> Any:
    from concurrent.futures import BrokenExecutor

    try:
        return future.result()
    except BrokenExecutor:
        raise TextclfError(WORKER_DIED) from None


def count_chunk(tokenizer: Tokenizer, index: object, texts: list[str]
                ) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Tokenize texts for a vocabulary still to be built: (the distinct tokens in first-seen order, each token
    as an index into them (int32, flat), tokens per text (int64), occurrences of each distinct token (int64))."""
    local: dict[str, int] = {}
    ids: list[int] = []
    lengths = np.empty(len(texts), dtype=np.int64)
    for position, text in enumerate(texts):
        tokens = tokenizer(text)
        lengths[position] = len(tokens)
        ids.extend([local.setdefault(token, len(local)) for token in tokens])
    local_ids = np.array(ids, dtype=np.int32)
    return list(local), local_ids, lengths, np.bincount(local_ids, minlength=len(local)).astype(np.int64)


def encode_chunk(tokenizer: Tokenizer, index: dict[str, int], texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Token ids (int32, flat) and tokens per text (int64) for a known vocabulary."""
    ids, offsets = encode([tokenizer(text) for text in texts], index)
    return ids, np.diff(offsets)


def _pool(workers: int, settings: TokenizerSettings, index: dict[str, int] | None) -> ProcessPoolExecutor:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: the parent may already run torch's thread pools, which do not survive a fork. An executor,
    # not multiprocessing.Pool: it notices a worker that died and fails its chunks (BrokenProcessPool); Pool
    # waits for them forever.
    context = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(settings, index))


def _stop(pool: ProcessPoolExecutor) -> None:
    """Shut the pool down without waiting for the chunks in flight: its workers are ended, not drained."""
    # `_processes` is private, but it is the only way to end the workers before Python 3.14's terminate_workers
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    for process in processes:
        process.join()


_worker_tokenizer: Tokenizer | None = None
_worker_index: dict[str, int] | None = None


def _init_worker(settings: TokenizerSettings, index: dict[str, int] | None) -> None:
    global _worker_tokenizer, _worker_index
    # Ctrl-C reaches the whole process group: the parent handles it and ends the workers; one that died of it
    # on its own would look like a killed worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker_tokenizer, _worker_index = Tokenizer(settings), index


def _run_in_worker(function: Callable, texts: list[str]) -> Any:
    assert _worker_tokenizer is not None  # set by _init_worker in every pool process
    return function(_worker_tokenizer, _worker_index, texts)
