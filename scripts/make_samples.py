"""Draw the bundled sample (data/samples/) from the official IMDb archive with a fixed seed.

usage: python scripts/make_samples.py [ARCHIVE] [--train 2000] [--test 1000] [--seed 13]
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import pandas as pd

from textclf_cli.data.sources import read_imdb

DEFAULT_ARCHIVE = Path(__file__).resolve().parents[2] / "shared/datasets/imdb/aclImdb_v1.tar.gz"
OUT_DIR = Path(__file__).resolve().parents[1] / "data/samples"


def balanced_sample(texts: list[str], labels: list[str], size: int, rng: random.Random) -> pd.DataFrame:
    picked = []
    for label in sorted(set(labels)):
        positions = [i for i, value in enumerate(labels) if value == label]
        picked += rng.sample(positions, size // 2)
    rng.shuffle(picked)
    return pd.DataFrame({"text": [texts[i] for i in picked], "label": [labels[i] for i in picked]})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("archive", nargs="?", type=Path, default=DEFAULT_ARCHIVE)
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    splits = read_imdb(args.archive)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for split, size in (("train", args.train), ("test", args.test)):
        frame = balanced_sample(splits[split].texts, splits[split].labels, size, rng)
        frame.to_csv(OUT_DIR / f"imdb_{split}.csv", index=False)
        print(f"{OUT_DIR / f'imdb_{split}.csv'}: {len(frame)} reviews")


if __name__ == "__main__":
    main()
