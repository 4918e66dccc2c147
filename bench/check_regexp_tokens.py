"""Check that textclf's regexp tokenizer gives exactly nltk's RegexpTokenizer tokens on every IMDb review.

usage: PYTHONPATH=. python bench/check_regexp_tokens.py [--archive data/aclImdb_v1.tar.gz]
Prints the number of reviews compared and any that differ (exit code 1 if one does).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from nltk.tokenize import RegexpTokenizer

from textclf_cli.data.sources import read_imdb
from textclf_cli.data.text import WORD_OR_PUNCT, Tokenizer, TokenizerSettings


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--archive", type=Path, default=Path("data/aclImdb_v1.tar.gz"))
    args = parser.parse_args()
    ours = Tokenizer(TokenizerSettings(kind="regexp", lowercase=True, strip_html=True))
    # nltk's tokenizer behind the same cleaning steps: only the splitter differs
    reference = Tokenizer(TokenizerSettings(kind="regexp", lowercase=True, strip_html=True))
    reference._split = RegexpTokenizer(WORD_OR_PUNCT).tokenize
    raw = Tokenizer(dataclasses.replace(ours.settings, lowercase=False, strip_html=False))
    raw_reference = Tokenizer(raw.settings)
    raw_reference._split = RegexpTokenizer(WORD_OR_PUNCT).tokenize
    compared = differing = 0
    for split in read_imdb(args.archive).values():
        for text in split.texts:
            for mine, theirs in ((ours, reference), (raw, raw_reference)):
                compared += 1
                if mine(text) != theirs(text):
                    differing += 1
                    print(f"differs: {text[:120]!r}")
    print(f"{compared} texts compared (train + test reviews, cleaned and raw), {differing} differ")
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
