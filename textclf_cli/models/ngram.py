"""NBSVM-style logistic regression over binarized word 1..n-grams (Wang & Manning 2012).

Each text is the set of its word n-grams (unigrams by vocabulary id, longer n-grams hashed into buckets) and,
with `chars`, of the character 2..chars-grams inside its words (each word padded with a space, like
scikit-learn's `char_wb`), hashed into a bucket range of their own: they give a short text's rare and unseen
word forms the subwords of frequent ones. Each vocabulary word's character n-grams are listed once, before
counting (`word_chars`), so the model still reads token ids alone.
A feature's weight for class c is a learned w times its naive-Bayes log-count ratio r (texts of class c
against the rest), counted once over the training split before the first epoch. n-grams seen in fewer
than `min_df` training texts are dropped, and each text's word features and its character features each have
unit L2 norm, so long and short texts weigh alike and the many character n-grams do not drown the words.
Trained with its own step size and an L2 penalty like LogisticRegression(C=1/l2), it matches TF-IDF+LR
within a few minutes on any data, and it is the member that the network's ensemble leans on where a corpus is
small or its signal sits in phrases (see models/ensemble.py).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence

import torch
from torch import nn

HASH_PRIME = 1_000_003
MAX_WORD_CHARS = 64  # character n-grams kept per vocabulary word (a 2..5-gram word of 15 letters has 58)
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # token ids (B, T), lengths (B,), targets (B,) or (B, C)


class NgramLogReg(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        ngrams: int = 3,
        buckets: int = 2_097_152,
        min_df: int = 2,
        alpha: float = 1.0,
        lr: float = 0.01,
        l2: float = 0.1,
        chars: int = 0,
    ) -> None:
        super().__init__()
        self.vocab_size, self.num_classes = vocab_size, num_classes
        self.ngrams, self.buckets, self.min_df, self.alpha = ngrams, buckets, min_df, alpha
        self.lr, self.l2, self.chars = lr, l2, chars
        # every vocabulary id, then the word n-gram buckets, then the character n-gram buckets
        self.char_offset = vocab_size + (buckets if ngrams > 1 else 0)
        features = self.char_offset + (buckets if chars else 0)
        if chars:  # (vocab, K) feature ids of each word's character n-grams, 0 for none; filled by fit_counts
            self.register_buffer("word_chars", torch.zeros(vocab_size, 0, dtype=torch.int32))
        # each feature's row in the table below, 0 for the features dropped by min_df: the table then holds the
        # kept n-grams only (a small share of the buckets), so a large, nearly collision-free hash space costs
        # the optimizer and the checkpoint no more than the n-grams the data has. Filled by fit_counts.
        self.register_buffer("table_row", torch.zeros(features, dtype=torch.int32))
        self.weight = nn.Parameter(torch.zeros(1, num_classes))  # row 0 stands for every dropped feature: zero
        self.bias = nn.Parameter(torch.zeros(num_classes))
        self.register_buffer("ratios", torch.zeros(1, num_classes))  # naive-Bayes log-count ratio of each row
        self.register_buffer("train_size", torch.zeros((), dtype=torch.long))

    def features(self, token_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, K) feature rows of each text's distinct n-grams; 0 (the pad id) fills the rest."""
        parts = [token_ids]
        for n in range(2, self.ngrams + 1):
            if token_ids.size(1) - n + 1 > 0:
                parts.append(self.word_ngram_ids(token_ids, lengths, n))
        if self.chars:  # padding (id 0) and <unk> have none
            parts.append(self.word_chars[token_ids].flatten(1).to(token_ids.dtype))
        ids = torch.cat(parts, dim=1).sort(dim=1).values
        # a concatenation, not a slice assignment: traced, that exports as ScatterND, slow in onnxruntime
        repeated = torch.cat([torch.zeros_like(ids[:, :1], dtype=torch.bool), ids[:, 1:] == ids[:, :-1]], dim=1)
        return ids.masked_fill(repeated, 0)

    def word_ngram_ids(self, token_ids: torch.Tensor, lengths: torch.Tensor, n: int) -> torch.Tensor:
        """(B, T) -> (B, T - n + 1) feature id of the word n-gram starting at each position, 0 past the text's end
        (explain maps each n-gram back to the tokens it covers through these positions)."""
        width = token_ids.size(1) - n + 1
        hashed = token_ids[:, :width] + n  # the order joins the hash, so a bigram and a trigram rarely meet
        for offset in range(1, n):  # reduced at each step: no int64 overflow, the same in every runtime
            hashed = (hashed * HASH_PRIME + token_ids[:, offset: offset + width]).remainder(self.buckets)
        inside = torch.arange(width, device=token_ids.device)[None, :] < (lengths - n + 1)[:, None]
        return (hashed + self.vocab_size).masked_fill(~inside, 0)

    def forward(self, token_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        ids = self.features(token_ids, lengths)
        rows = self.table_row[ids].long()  # (B, K); 0: padding or dropped
        present = (rows > 0).float()  # (B, K) 0/1
        if self.chars:  # unit L2 norm for the words' part and for the characters' part of each text
            is_char = (ids >= self.char_offset).float()
            char_norm = (present * is_char).sum(dim=1, keepdim=True).clamp(min=1.0).sqrt()
            word_norm = (present * (1 - is_char)).sum(dim=1, keepdim=True).clamp(min=1.0).sqrt()
            scale = present / (is_char * char_norm + (1 - is_char) * word_norm)
        else:
            scale = present / present.sum(dim=1, keepdim=True).clamp(min=1.0).sqrt()  # unit L2 norm per text
        # in fp32 even under bf16 autocast: a sum of hundreds of small terms is cheap here and bf16 would round it
        with torch.autocast(token_ids.device.type, enabled=False):
            weights = nn.functional.embedding(rows, self.weight)  # (B, K, C)
            if not self.folded:
                weights = weights * nn.functional.embedding(rows, self.ratios)
            return torch.einsum("bk,bkc->bc", scale.float(), weights.float()) + self.bias.float()

    @torch.no_grad()
    def fit_counts(self, batches: Iterable[Batch], vocabulary: Sequence[str] | None = None) -> None:
        """Document frequencies and per-class counts of every n-gram in the training split -> the table of kept
        n-grams (table_row), their ratios, and zero weights. Runs before the optimizer sees the weights. With
        `chars`, the vocabulary's words (by id) first give each word's character n-grams."""
        if self.chars:
            if vocabulary is None or len(vocabulary) != self.vocab_size:
                raise ValueError("character n-grams need the vocabulary the token ids index")
            self.word_chars = word_char_features(vocabulary, self.chars, self.buckets, self.char_offset)
        features = self.table_row.numel()
        document_frequency = torch.zeros(features, dtype=torch.float64)
        class_frequency = torch.zeros(features, self.num_classes, dtype=torch.float32)  # exact below 2^24 texts
        texts = 0
        for token_ids, lengths, targets in batches:
            ids = self.features(token_ids, lengths)
            flags = (targets if targets.dim() == 2 else nn.functional.one_hot(targets, self.num_classes)).bool()
            # index_add_ costs what the batch holds; a bincount over all 2^23 buckets per batch cost far more
            document_frequency.index_add_(0, ids.flatten(), torch.ones(ids.numel(), dtype=torch.float64))
            for label in range(self.num_classes):
                held = ids[flags[:, label]].flatten()
                class_frequency[:, label].index_add_(0, held, torch.ones(held.numel()))
            texts += len(ids)
        document_frequency[0] = 0  # padding
        class_frequency[0] = 0
        kept, table_row = kept_table(document_frequency >= self.min_df)
        # smoothed texts of each class holding the n-gram, and of the other classes; normalized over all features
        in_class = class_frequency.sum(0, dtype=torch.float64)
        inside_total = in_class + self.alpha * features
        outside_total = (document_frequency.sum() - in_class) + self.alpha * features
        inside = class_frequency[kept].double() + self.alpha
        outside = (document_frequency[kept, None] - class_frequency[kept].double()) + self.alpha
        ratios = torch.log((inside / inside_total) / (outside / outside_total))
        self.table_row = table_row
        self.ratios = torch.cat([torch.zeros(1, self.num_classes), ratios.float()])
        self.weight = nn.Parameter(torch.zeros(len(kept) + 1, self.num_classes))
        self.train_size.fill_(texts)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        """The table's size comes from the training counts, so it is taken from the saved weights."""
        saved = state_dict.get(prefix + "weight")
        if saved is not None and saved.shape != self.weight.shape:
            self.weight = nn.Parameter(torch.zeros(saved.shape, device=self.weight.device))
            self.ratios = torch.zeros(saved.shape, device=self.ratios.device)
        saved_chars = state_dict.get(prefix + "word_chars")
        if self.chars and saved_chars is not None and saved_chars.shape != self.word_chars.shape:
            self.word_chars = torch.zeros(saved_chars.shape, dtype=torch.int32, device=self.word_chars.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    folded = False  # fold_ratios() ran: `weight` holds weight * ratios

    @torch.no_grad()
    def fold_ratios(self) -> None:
        """For a model that trains no more (an export): one table of weight * ratios instead of two looked up and
        multiplied per feature; the same outputs, half the table's size."""
        self.weight = nn.Parameter(self.weight * self.ratios, requires_grad=False)
        self.ratios = torch.zeros(1, self.num_classes)
        self.folded = True

    def param_groups(self) -> list[dict]:
        """Its own step size, and an L2 penalty per training text on the weights (not the bias)."""
        decay = self.l2 / max(1, int(self.train_size))
        return [{"params": [self.weight], "lr": self.lr, "weight_decay": decay},
                {"params": [self.bias], "lr": self.lr, "weight_decay": 0.0}]


def word_char_features(vocabulary: Sequence[str], chars: int, buckets: int, offset: int) -> torch.Tensor:
    """(vocab, K) int32: each word's distinct character 2..chars-grams of " word " as feature ids in
    [offset, offset + buckets), 0-padded; none for the special tokens <pad> and <unk> (ids 0 and 1). crc32, not
    hash(): the same ids in every process and on every machine."""
    per_word = [[] for _ in vocabulary]
    for index, word in enumerate(vocabulary[2:], start=2):
        padded, seen = f" {word} ", set()
        for n in range(2, chars + 1):
            for start in range(len(padded) - n + 1):
                gram = padded[start:start + n]
                if gram not in seen and len(seen) < MAX_WORD_CHARS:
                    seen.add(gram)
                    per_word[index].append(offset + zlib.crc32(gram.encode("utf-8")) % buckets)
    table = torch.zeros(len(vocabulary), max(map(len, per_word), default=0), dtype=torch.int32)
    for index, ids in enumerate(per_word):
        table[index, :len(ids)] = torch.tensor(ids, dtype=torch.int32)
    return table


def kept_table(kept_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The positions of the kept features (never padding) and each feature's row in a table of them (0: dropped)."""
    kept = kept_mask.nonzero().squeeze(1)
    kept = kept[kept > 0]
    table_row = torch.zeros(len(kept_mask), dtype=torch.int32)
    table_row[kept] = torch.arange(1, len(kept) + 1, dtype=torch.int32)
    return kept, table_row
