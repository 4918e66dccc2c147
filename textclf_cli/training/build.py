"""Building a Trainer from a config and prepared data: model, optimizer, schedule, loss, n-gram counts, embeddings."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from textclf_cli import files
from textclf_cli.config import Config
from textclf_cli.console import log
from textclf_cli.data.loader import batch_indices, clipped_lengths, collate
from textclf_cli.data.prepared import PreparedData
from textclf_cli.models.build import build_model, fit_counts, min_width, model_kwargs
from textclf_cli.runs.checkpoint import (
    CheckpointMeta,
    checkpoint_meta,
    load_checkpoint,
)
from textclf_cli.training.distributed import Processes
from textclf_cli.training.optim import build_loss, build_multilabel_loss, build_optimizer, build_scheduler
from textclf_cli.training.resume import load_resumed_weights, restore_training_state
from textclf_cli.training.state import EnsembleRun, LoopSettings, MemberState, SignalGuard, Trainer, TrainState


def build_trainer(config: Config, data: PreparedData, amp: Any, resume_dir: Path | None,
                  processes: Processes) -> tuple[Trainer, TrainState, CheckpointMeta]:
    device = processes.device
    torch.manual_seed(config.seed)
    kwargs = model_kwargs(config.model)
    model = build_model(config.model.type, len(data.vocab), len(data.labels), kwargs)
    load_embeddings_if_configured(model, config, data)
    resumed = None
    if resume_dir is None:
        count_training_ngrams(model, config, data)
    else:  # weights and counts (they size the n-gram table) go in before DDP and the optimizer see the parameters
        resumed = load_checkpoint(resume_dir / files.CHECKPOINTS_DIR / files.LAST_CHECKPOINT)
        load_resumed_weights(model, resumed, resume_dir)
    model.to(device)
    loop_model = processes.wrap(model)
    if config.train.compile:  # after DDP, as PyTorch recommends: compile then sees DDP's gradient buckets
        loop_model = torch.compile(loop_model)
    optimizer = build_optimizer(model, config.train)
    batches_per_epoch = -(-len(data.splits["train"]) // config.train.batch_size)
    batches_per_epoch = -(-batches_per_epoch // processes.world_size)  # each rank steps through its share
    scheduler = build_scheduler(optimizer, config.train, batches_per_epoch)
    train_targets = data.splits["train"].targets
    loss_fn = (build_multilabel_loss(config.train.pos_weight, train_targets) if config.task == "multilabel"
               else build_loss(config.train.class_weights, train_targets, len(data.labels))).to(device)
    settings = LoopSettings(
        epochs=config.train.epochs, batch_size=config.train.batch_size, eval_batch_size=config.train.eval_batch_size,
        max_length=config.vocab.max_length, truncate=config.vocab.truncate, min_width=min_width(model),
        seed=config.seed, chunk_batches=config.train.bucket_chunk, grad_clip=config.train.grad_clip,
        monitor=config.train.monitor, patience=config.train.early_stopping_patience, labels=data.labels,
        task=config.task, threshold=config.train.threshold, members_stop_apart=processes.world_size == 1,
    )
    members = getattr(model, "members", None)
    trainer = Trainer(loop_model, optimizer, scheduler, loss_fn, device, amp, data.splits["train"],
                      data.splits["valid"], settings, SignalGuard(), processes, plain_model=model,
                      ensemble=EnsembleRun() if members else None)
    state = TrainState(members=[MemberState() for _ in members] if members else None)
    if resumed is not None:
        state = restore_training_state(trainer, resumed, resume_dir)
        log.info(f"resuming {resume_dir} after epoch {state.epoch}")
    return trainer, state, checkpoint_meta(config, data, kwargs)


def count_training_ngrams(model: nn.Module, config: Config, data: PreparedData) -> None:
    """The n-gram model's pass over the training split (as the loop will see it: same cut, same truncation).
    Every rank counts the whole split, so all ranks hold the same ratios without a collective."""
    split = data.splits["train"]
    order = batch_indices(clipped_lengths(split, config.vocab.max_length), 1024, shuffle=False)
    batches = (collate(split, indices, config.vocab.max_length, config.vocab.truncate, min_width(model))
               for indices in order)
    started = time.monotonic()
    if fit_counts(model, ((batch.token_ids, batch.lengths, batch.targets) for batch in batches), data.vocab):
        log.info(f"counted the training n-grams in {time.monotonic() - started:.1f}s")


def load_embeddings_if_configured(model: nn.Module, config: Config, data: PreparedData) -> None:
    if getattr(config.model, "pretrained_embeddings", None) is None:
        return
    from textclf_cli.training.embeddings import apply_pretrained

    apply_pretrained(getattr(model, "network", model), config.model.pretrained_embeddings, data.vocab, config.model.embedding_dim,
                     config.model.freeze_embeddings)
