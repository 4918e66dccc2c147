"""data/text.py: cleaning switches, each tokenizer kind, stopwords, missing nltk data, the process pool."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import kill_spawned_workers, spawned_workers
from textclf_cli.data import text as text_module
from textclf_cli.data.encoding import encode_stream
from textclf_cli.data.text import WORKER_DIED, ChunkTokenizer, Tokenizer, TokenizerSettings, count_chunk
from textclf_cli.errors import ConfigError, TextclfError

REVIEW = "It's a GREAT film, isn't it?<br /><br />Yes &amp; no... (10/10)"


def tokens(text: str, **settings) -> list[str]:
    return Tokenizer(TokenizerSettings(**settings))(text)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("regexp", ["it's", "a", "great", "film", ",", "isn't", "it", "?", "yes", "&", "no", ".", ".", ".",
                    "(", "10", "/", "10", ")"]),
        ("toktok", ["it", "'", "s", "a", "great", "film", ",", "isn", "'", "t", "it", "?", "yes", "&", "no", "...",
                    "(", "10/10", ")"]),
        ("treebank", ["it", "'s", "a", "great", "film", ",", "is", "n't", "it", "?", "yes", "&", "no", "...",
                      "(", "10/10", ")"]),
    ],
)
def test_each_tokenizer_kind_with_default_cleaning(kind: str, expected: list[str]) -> None:
    assert tokens(REVIEW, kind=kind) == expected


@pytest.mark.parametrize("kind", ["regexp", "toktok", "treebank"])
def test_strip_html_removes_tags_and_unescapes_entities(kind: str) -> None:
    cleaned = tokens("one<br />two<i>three</i> &quot;four&quot; five &amp; six", kind=kind, strip_punctuation=True)
    assert cleaned == ["one", "two", "three", "four", "five", "six"]


def test_html_kept_when_strip_html_is_off() -> None:
    assert tokens("a<br />b", kind="regexp", strip_html=False) == ["a", "<", "br", "/", ">", "b"]


@pytest.mark.parametrize("kind", ["regexp", "toktok", "treebank"])
def test_lowercase_switch(kind: str) -> None:
    assert tokens("Great FILM", kind=kind) == ["great", "film"]
    assert tokens("Great FILM", kind=kind, lowercase=False) == ["Great", "FILM"]


@pytest.mark.parametrize("kind", ["regexp", "toktok", "treebank"])
def test_strip_punctuation_keeps_only_tokens_with_word_characters(kind: str) -> None:
    result = tokens("Wow!!! A film -- (really) great; 10/10 & more | less...", kind=kind, strip_punctuation=True)
    assert result[:4] == ["wow", "a", "film", "really"]
    assert all(any(ch.isalnum() for ch in token) for token in result)
    assert "great" in result and "more" in result and "less" in result
    assert not {"&", "|", "&amp;", "&#124;"} & set(result)


@pytest.mark.parametrize("kind", ["regexp", "toktok", "treebank"])
def test_tabs_and_newlines_are_whitespace(kind: str) -> None:
    assert tokens("one\ttwo\nthree\r\nfour", kind=kind) == ["one", "two", "three", "four"]


def test_stopwords_from_the_sklearn_list() -> None:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    result = tokens("The movie was NOT as good as the book", kind="regexp", remove_stopwords=True)
    assert result == ["movie", "good", "book"]  # "not" is on sklearn's list too
    assert {"the", "was", "not", "as"} <= ENGLISH_STOP_WORDS
    assert tokens("The movie", kind="regexp") == ["the", "movie"]  # off by default


def test_stopwords_compare_case_insensitively_when_not_lowercasing() -> None:
    assert tokens("The Movie", kind="regexp", lowercase=False, remove_stopwords=True) == ["Movie"]


def missing_nltk_data(monkeypatch: pytest.MonkeyPatch) -> None:
    import nltk

    def find(resource: str, *args, **kwargs):
        raise LookupError(f"Resource {resource} not found.")

    monkeypatch.setattr(nltk.data, "find", find)


def test_punkt_without_its_data_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    missing_nltk_data(monkeypatch)
    with pytest.raises(ConfigError) as caught:
        Tokenizer(TokenizerSettings(kind="punkt"))
    message = str(caught.value)
    assert message.startswith("tokenizer.kind: punkt needs the nltk data package 'punkt_tab'")
    assert "`python -m nltk.downloader punkt_tab`" in message


def test_nltk_stopwords_without_their_data_say_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    missing_nltk_data(monkeypatch)
    with pytest.raises(ConfigError) as caught:
        Tokenizer(TokenizerSettings(kind="regexp", remove_stopwords=True, stopwords="nltk"))
    message = str(caught.value)
    assert message.startswith("tokenizer.stopwords: nltk needs the nltk data package 'stopwords'")
    assert "`python -m nltk.downloader stopwords`" in message


def test_nltk_stopwords_are_not_loaded_when_stopwords_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    missing_nltk_data(monkeypatch)
    assert tokens("the film", kind="regexp", stopwords="nltk") == ["the", "film"]


def test_default_tokenizer_needs_no_nltk_data(monkeypatch: pytest.MonkeyPatch) -> None:
    missing_nltk_data(monkeypatch)
    for kind in ("regexp", "toktok", "treebank"):
        assert tokens("Hello, world", kind=kind) == ["hello", ",", "world"]


def counted_tokens(texts: list[str], settings: TokenizerSettings, workers: int) -> list[list[str]]:
    """Each text's tokens as prepare gets them: count_chunk over chunks of 50 texts, read back in order."""
    chunks = [texts[start:start + 50] for start in range(0, len(texts), 50)]
    token_lists = []
    with ChunkTokenizer(settings, None, workers) as tokenizer:
        for _, (distinct, local_ids, lengths, _) in tokenizer.map(count_chunk, chunks):
            words, start = [distinct[i] for i in local_ids], 0
            for length in lengths:
                token_lists.append(words[start:start + length])
                start += length
    return token_lists


def test_process_pool_gives_the_same_tokens_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(text_module, "PARALLEL_MIN_TEXTS", 1)
    texts = [f"Text number {i}: <b>word{i % 7}</b>!" for i in range(300)]
    settings = TokenizerSettings(kind="regexp", strip_punctuation=True)
    alone = counted_tokens(texts, settings, workers=1)
    assert counted_tokens(texts, settings, workers=2) == alone
    assert alone == [Tokenizer(settings)(text) for text in texts]


def outcome_while_workers_are_killed(work: Callable[[], object], timeout: float = 30) -> BaseException | None:
    """Run `work` in a thread while this process's pool workers are SIGKILLed as they appear (as the OOM killer
    would); what it raised. A thread still waiting after `timeout` fails the test (multiprocessing.Pool waited
    forever for the chunks a killed worker held)."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            work()
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while thread.is_alive() and time.monotonic() < deadline:
        kill_spawned_workers(os.getpid())
        time.sleep(0.005)
    thread.join(0.1)
    assert not thread.is_alive(), f"still waiting {timeout}s after the tokenizer workers were killed"
    return outcome[0]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the worker processes through /proc")
@pytest.mark.parametrize("path", ["encode_stream", "count_chunk"])
def test_a_killed_worker_is_an_error_not_a_hang(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    # encode_stream is how predict --input and evaluate tokenize, count_chunk how prepare does; the whole
    # prepare stage under a killed worker is tests/e2e/test_unattended.py's
    monkeypatch.setattr(text_module, "PARALLEL_MIN_TEXTS", 1)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    texts = [f"text {i} about a film" for i in range(4000)]
    settings = TokenizerSettings(kind="regexp")
    if path == "encode_stream":
        chunks = [texts[start:start + 100] for start in range(0, len(texts), 100)]
        work = lambda: list(encode_stream(chunks, settings, ["<pad>", "<unk>", "film"]))  # noqa: E731
    else:
        work = lambda: counted_tokens(texts, settings, workers=2)  # noqa: E731
    raised = outcome_while_workers_are_killed(work)
    assert isinstance(raised, TextclfError) and str(raised) == WORKER_DIED
    assert spawned_workers(os.getpid()) == [], "no worker is left running"


TRICKY_TEXTS = [
    "7½/10, alien³ and 2² stars; x₁ ⅓ ٣ ₂",  # numeric symbols: `re`'s \w takes them, nltk's engine does not
    "don't won't rock'n'roll o'clock '90s the 80's' ''quoted'' l'amour",
    "naïve café CAFÉ déjà-vu ﬁne e\u0301 combining\u0301 marks ß ǅ İstanbul",
    "日本語のテキスト 中文 한국어 עברית العربية ไทย हिन्दी",
    "emoji 😀👍🏽 ❤️ #hashtag @user snake_case __init__ a_b'c_d",
    "tabs\tand\nnewlines\r\nand\u00a0nbsp\u2003em\u200bzero-width\u2028line",
    "$5.99 3.14 1,000,000 -1 +2 50% a+b=c <tag> &amp; ... !!! ?!",
    "'' ' 'a a' '' x'' ''y",
    "",
]


@pytest.mark.parametrize("lowercase", [True, False])
@pytest.mark.parametrize("strip_html", [True, False])
def test_regexp_tokens_equal_nltks_regexp_tokenizer(lowercase: bool, strip_html: bool) -> None:
    from nltk.tokenize import RegexpTokenizer

    from textclf_cli.data.text import WORD_OR_PUNCT

    ours = Tokenizer(TokenizerSettings(kind="regexp", lowercase=lowercase, strip_html=strip_html))
    reference = Tokenizer(ours.settings)
    reference._split = RegexpTokenizer(WORD_OR_PUNCT).tokenize  # nltk's own splitter, same cleaning
    for text in TRICKY_TEXTS:
        assert ours(text) == reference(text), text


def test_regexp_tokenizer_does_not_import_nltk() -> None:
    code = ("import sys; from textclf_cli.data.text import Tokenizer, TokenizerSettings; "
            "print(Tokenizer(TokenizerSettings(kind='regexp'))('7½ stars')); print('nltk' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split("\n")[:2] == ["['7', '½', 'stars']", "False"]
