"""`build_image_dataset(cfg, processor)`: a vision-language recipe's `train_dataset` -> training rows.

The text pipeline's steps, with images riding along: records -> checked conversations (images
attached to the messages that show them) -> every image opened and verified -> template segments, each
`<image>` marker written as the model's image prompt -> tokens, exact at segment boundaries -> every
image token expanded by the processor (`xtune.data.image_tokens`) -> rows of `input_ids`, `labels` and
the image files in order (packed or not). Lengths count the image tokens, so packing and length-grouped
batches see the real sequence. Pixels are computed per batch by the collator (`image_batches`).
Rows are cached like text rows, by the source, the settings, the processor and the image folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from xtune.data import cache
from xtune.data.image_checks import PictureChecks
from xtune.data.image_tokens import ImageTokens, cut_before_images
from xtune.data.images import image_folder, resolve_images
from xtune.data.pipeline import REPORT_PREFIX, build_rows, fingerprint_for, render_conversations
from xtune.data.records import check_settings, load_conversations, local_source_print, settle_problems
from xtune.data.tokenize import encode_many, encode_pretrain, finish
from xtune.templates.images import with_image_prompt


def processor_print(processor, image_prompt: str) -> str:
    """What decides a processor's image tokens: its class, image processor settings, tokenizer, prompt."""
    image_processor = processor.image_processor.to_json_string()
    return cache.fingerprint({"class": type(processor).__name__, "images": image_processor,
                              "tokenizer": cache.tokenizer_fingerprint(processor.tokenizer),
                              "prompt": image_prompt})


def _key(cfg: dict, processor, image_prompt: str, source_print: str, registry) -> str:
    folder = image_folder(cfg)
    text = fingerprint_for(cfg, processor.tokenizer, source_print, registry=registry)
    return cache.fingerprint({"text": text,
                              "processor": processor_print(processor, image_prompt),
                              "image_folder": str(folder.resolve()) if folder else None})


def build_image_dataset(cfg: dict, processor, *, registry, image_prompt: str = "",
                        progress: bool = True, use_cache: bool = True):
    """Training rows (input_ids, labels, images [+ position_ids]) for a vision-language recipe.

    `image_prompt` is the text an image marker becomes (the model adapter's; default the processor's
    image token).
    """
    image_prompt = image_prompt or processor.image_token
    cache_dir = Path(cfg.get("cache_dir") or cache.default_cache_dir())
    check_settings(cfg)
    early = local_source_print(cfg, registry=registry) if use_cache else None
    if early is not None:
        cached = cache.load(cache_dir, _key(cfg, processor, image_prompt, early, registry))
        if cached is not None:
            return cached
    skipped: list[str] = []
    problems: list[str] = []  # bad records and bad pictures, reported together
    conversations, wheres, source_print = load_conversations(cfg, registry=registry, progress=progress,
                                                             deferred=problems, vision=True)
    folder, tokens, checks = image_folder(cfg), ImageTokens(processor), PictureChecks()
    images, kept, bad = resolve_images(conversations, wheres, folder, checks=checks, accepts=tokens.refusal)
    settle_problems(problems + bad, cfg, len(kept), skipped,
                    hint=None if folder else "set image_folder to the folder the image paths start from")
    checks.save()
    conversations, wheres = [conversations[i] for i in kept], [wheres[i] for i in kept]
    records = len(conversations) + len(skipped)
    key = _key(cfg, processor, image_prompt, source_print, registry)
    if use_cache and (cached := cache.load(cache_dir, key)) is not None:
        return cached
    segments = render_conversations(conversations, wheres, cfg.get("prompt_template"), processor.tokenizer,
                                    registry=registry)
    sizes = [[v.size for v in checks.check([Path(p) for p in paths])] for paths in images]
    columns = _tokenize(segments, images, sizes, wheres, tokens, image_prompt, cfg, skipped)
    result, report = build_rows(columns, cfg)
    report.update(records=records, skipped_bad_records=len(skipped),
                  images=sum(map(len, columns["images"])))
    result.info.description = REPORT_PREFIX + json.dumps(report)
    if use_cache:
        cache.save(result, cache_dir, key, progress=progress and len(result) >= 2000)
    return result


def _tokenize(segments, images, sizes, wheres, tokens: ImageTokens, image_prompt: str, cfg: dict,
              skipped: list[str]) -> dict[str, list]:
    """input_ids, labels, images and a status per conversation, image tokens expanded. A conversation whose
    text holds the image token itself is a bad record (left out with `skip_bad_records=True`)."""
    tokenizer, max_length = tokens.processor.tokenizer, int(cfg.get("max_length") or 2048)
    chats = [[(with_image_prompt(s["text"], image_prompt), s["train"]) for s in segs] for segs in segments]
    chat_only = [c for c, segs in zip(chats, segments, strict=True) if not segs[0]["pretrain"]]
    encoded = iter(encode_many(chat_only, tokenizer))
    out: dict[str, list] = {"input_ids": [], "labels": [], "images": [], "status": []}
    problems = []
    for segs, paths, shapes, where in zip(segments, images, sizes, wheres, strict=True):
        ids, labels = encode_pretrain(segs[0]["text"], tokenizer) if segs[0]["pretrain"] else next(encoded)
        try:
            ids, labels, spans = tokens.expand(ids, labels, shapes)
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            continue
        cut_ids, cut_labels, kept = cut_before_images(ids, labels, spans, max_length)
        done = finish(cut_ids, cut_labels, max_length)
        out["input_ids"].append(done[0] if done else [])
        out["labels"].append(done[1] if done else [])
        out["images"].append(paths[:kept] if done else [])
        out["status"].append("dropped" if done is None else "truncated" if len(ids) > max_length else "ok")
    settle_problems(problems, cfg, len(out["input_ids"]), skipped,
                    hint="a text with the image token itself needs an <image> marker instead")
    return out
