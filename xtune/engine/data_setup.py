"""A run's training data: rows built once (rank 0 first, the others read its cache), the held-out split,
the collator (built once, for training, validation and a precomputed reference alike), the sampler."""

from __future__ import annotations

from xtune.errors import ConfigError


def build_rows(cfg, data_cfg: dict, tokenizer, registry, processor=None):
    """The data pipeline's rows; rank 0 builds (and caches) first so other ranks read its cache."""
    from mmengine.dist import barrier, get_rank, is_distributed

    from xtune.data.from_recipe import build_dataset
    from xtune.models.build import model_adapter

    adapter = model_adapter(cfg, registry)
    if processor is not None and data_cfg.get("pack_to_max_length") and not adapter.supports_varlen:
        raise ConfigError(f"pack_to_max_length=True: {adapter.name} models place tokens by their own "
                          "(multimodal) positions, which packed rows would break",
                          hint="set pack_to_max_length=False (batches are grouped by length)")
    if is_distributed() and get_rank() != 0:
        barrier()
    dataset = build_dataset(data_cfg, tokenizer, registry=registry, processor=processor,
                            image_prompt=adapter.image_prompt if adapter is not None else "")
    if is_distributed() and get_rank() == 0:
        barrier()
    return dataset


def training_data(cfg, data_cfg: dict, registry, tokenizer, processor=None):
    """(training rows, held-out rows or None): `val_ratio` of the rows are held out for validation."""
    dataset = build_rows(cfg, data_cfg, tokenizer, registry, processor)
    val_dataset = None
    if float(cfg.get("val_ratio") or 0) > 0:
        split = dataset.train_test_split(test_size=float(cfg.val_ratio), seed=data_cfg["seed"])
        dataset, val_dataset = split["train"], split["test"]
    if len(dataset) == 0:
        raise ConfigError("the training data set is empty after processing")
    return dataset, val_dataset


def collator(cfg, data_cfg: dict, tokenizer, processor=None):
    """The batches' collator: text rows (SFT, pairs, ...) or rows with pictures."""
    from xtune.data.image_batches import build_image_collator
    from xtune.data.preference_collate import collator_for

    return (build_image_collator(dict(cfg.train_dataset), processor) if processor is not None
            else collator_for(data_cfg, tokenizer))


def sampler(dataset, cfg, seed: int, accumulation: int, sequence=None):
    """Shuffled rows for packed data, length-grouped ones (little padding) for unpacked data; either way
    decided per global batch, so how it is split into micro-batches and processes changes nothing. Under
    sequence parallel (`sequence`) the processes of a group share rows: rows are dealt per group."""
    from xtune.data.sampler import GlobalBatchSampler

    grouped = not (cfg.train_dataset.get("pack_to_max_length")
                   or cfg.train_dataloader.get("group_by_length") is False)
    lengths = [len(ids) for ids in dataset["input_ids"]] if grouped else None
    ranks = {} if sequence is None else dict(rank=sequence.data_rank, world_size=sequence.data_size)
    return GlobalBatchSampler(len(dataset), int(cfg.train_dataloader.batch_size), accumulation=accumulation,
                              lengths=lengths, seed=seed, **ranks)


def dataloader(dataset, cfg, collate, row_sampler) -> dict:
    """An mmengine dataloader config over `dataset`."""
    return dict(dataset=dataset, sampler=row_sampler, collate_fn=collate,
                batch_size=int(cfg.train_dataloader.batch_size),
                num_workers=int(cfg.train_dataloader.get("num_workers", 0) or 0))
