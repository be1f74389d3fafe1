"""Looking at processed data: summary statistics and one sample rendered with its trained spans marked.

Used by `xtune check-custom-dataset`, `xtune log-dataset` and the engine's dataset-info runner hook,
so what a user inspects is exactly what training consumes.
"""

from __future__ import annotations

from typing import Any

from xtune.data.encode import build_report
from xtune.data.packing import sample_lengths
from xtune.data.tokenize import IGNORE_INDEX

TRAIN_MARKS = ("[[", "]]")  # around trained text in plain output


def dataset_stats(dataset, max_length: int | None = None) -> dict[str, Any]:
    """records, samples, rows, tokens, trained tokens, dropped/truncated counts, fill ratio, lengths.

    Counts that only the build knows (records read, dropped, truncated) come from the build report
    when the data set was made by build_train_dataset.
    """
    report = build_report(dataset)
    max_length = max_length or report.get("max_length")
    has_positions = "position_ids" in dataset.column_names  # packed rows, or the pairs of preference rows
    packed = bool(report.get("packed", has_positions))
    lengths: list[int] = []
    tokens = trained = 0
    for row in dataset:
        ids, labels = row["input_ids"], row["labels"]
        tokens += len(ids)
        trained += sum(1 for label in labels if label != IGNORE_INDEX)
        lengths += sample_lengths(row["position_ids"]) if has_positions else [len(ids)]
    stats = {
        "records": report.get("records", len(lengths)),
        "samples": len(lengths),
        "rows": len(dataset),
        "tokens": tokens,
        "trained_tokens": trained,
        "skipped_bad_records": report.get("skipped_bad_records", 0),
        "dropped": report.get("dropped", 0),
        "truncated": report.get("truncated", 0),
        "packed": packed,
        "prompts": "prompt_messages" in dataset.column_names,  # PPO / GRPO: prompts the policy answers
        "max_length": max_length,
        "mean_sample_tokens": tokens / len(lengths) if lengths else 0.0,
        "max_sample_tokens": max(lengths, default=0),
        "length_histogram": length_histogram(lengths, max_length),
    }
    if packed and max_length:
        stats["row_length"] = report.get("row_length", max_length)  # preference rows hold 2 x max_length
        stats["fill_ratio"] = tokens / (len(dataset) * stats["row_length"]) if len(dataset) else 0.0
    if report.get("sample_roles"):
        stats["sample_roles"] = report["sample_roles"]  # preference rows: (chosen, rejected) ...
    return stats


def length_histogram(lengths: list[int], max_length: int | None = None,
                     bins: int = 8) -> list[tuple[int, int, int]]:
    """(low, high, count) buckets of equal width up to max_length (or the longest sample)."""
    top = max_length or max(lengths, default=1)
    width = max(1, -(-top // bins))
    counts = [0] * bins
    for n in lengths:
        counts[min((n - 1) // width if n else 0, bins - 1)] += 1
    return [(i * width + 1, min((i + 1) * width, top), c) for i, c in enumerate(counts)]


def format_stats(stats: dict[str, Any]) -> str:
    """A few aligned lines of text for the CLI."""
    lines = [
        f"records:          {stats['records']}"
        + (f" (and {stats['skipped_bad_records']} bad ones skipped)" if stats.get("skipped_bad_records")
           else ""),
        f"prompts kept:     {stats['samples']} (dropped {stats['dropped']}: longer than max_length "
        f"{stats['max_length']})" if stats.get("prompts") else
        f"samples kept:     {stats['samples']} (dropped {stats['dropped']}: no trained token left after "
        f"truncation; truncated {stats['truncated']})",
        f"tokens:           {stats['tokens']} ({stats['mean_sample_tokens']:.1f} per sample, longest "
        f"{stats['max_sample_tokens']})",
    ]
    if not stats.get("prompts"):  # a prompt is answered by the policy: none of its tokens is trained
        lines.append(f"trained tokens:   {stats['trained_tokens']}")
    if stats.get("packed"):
        lines.append(f"packed rows:      {stats['rows']} of {stats.get('row_length', stats['max_length'])} "
                     f"tokens, fill ratio {stats.get('fill_ratio', 0):.4f}")
    lines.append("sample length histogram (tokens):")
    peak = max((c for _, _, c in stats["length_histogram"]), default=0) or 1
    for low, high, count in stats["length_histogram"]:
        lines.append(f"  {low:>6}-{high:<6} {count:>7}  {'#' * round(40 * count / peak)}")
    return "\n".join(lines)


def render_sample(row: dict, tokenizer, marks: tuple[str, str] = TRAIN_MARKS) -> list[str]:
    """Each sample of a row as text, trained spans wrapped in `marks` (one string per packed sample).

    Spans are cut from decodes of growing prefixes of the sample, not decoded one by one: a
    SentencePiece decoder drops the leading space of a piece decoded alone, which would hide
    exactly the boundary detail this view is for.
    """
    ids, labels = list(row["input_ids"]), list(row["labels"])
    lengths = sample_lengths(row["position_ids"]) if "position_ids" in row else [len(ids)]
    out, start = [], 0
    for length in lengths:
        end = start + length
        cuts = [start] + [i for i in range(start + 1, end)
                          if (labels[i] != IGNORE_INDEX) != (labels[i - 1] != IGNORE_INDEX)] + [end]
        texts = [tokenizer.decode(ids[start:c], skip_special_tokens=False, clean_up_tokenization_spaces=False)
                 for c in cuts]
        pieces = []
        for (a, b), (before, after) in zip(zip(cuts, cuts[1:], strict=False),
                                           zip(texts, texts[1:], strict=False),
                                           strict=True):
            text = after[len(before):] if after.startswith(before) else tokenizer.decode(
                ids[a:b], skip_special_tokens=False, clean_up_tokenization_spaces=False)
            pieces.append(f"{marks[0]}{text}{marks[1]}" if labels[a] != IGNORE_INDEX else text)
        out.append("".join(pieces))
        start = end
    return out
