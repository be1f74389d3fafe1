"""One model on one test set: its answers, their scores, and the rows of the predictions file.

`xtune eval` calls `evaluate_model` once per model it compares; the training loop calls it at the end of
a run (and every `evaluation_steps`) through `xtune.engine`'s evaluation. `predictions_jsonl` and
`metrics_table` turn the results into the `--out` file and the table on stdout.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from xtune.evaluate.generate import Prompting, generate_answers
from xtune.evaluate.metrics import score
from xtune.evaluate.testset import TestRecord

# The table's columns: (metric key, heading, format)
COLUMNS = (("records", "records", "{:d}"), ("bleu-4", "BLEU-4", "{:.2f}"), ("rouge-1", "ROUGE-1", "{:.2f}"),
           ("rouge-2", "ROUGE-2", "{:.2f}"), ("rouge-l", "ROUGE-L", "{:.2f}"),
           ("exact_match", "exact match", "{:.1f}"), ("mean_length", "mean length", "{:.1f}"),
           ("records_per_s", "records/s", "{:.2f}"))


@dataclass
class Evaluation:
    label: str  # the model (and adapter) as the user named it
    metrics: dict  # bleu-4, rouge-1/2/l, exact_match (all x 100), records, mean lengths, seconds
    rows: list[dict]  # one per record: prompt, prediction, reference and the record's own scores


def evaluate_model(model, tokenizer, prompting: Prompting, records: list[TestRecord], *, label: str,
                   batch_size: int = 8, max_new_tokens: int = 128, progress: bool | str = True) -> Evaluation:
    """Generate every record's answer greedily and score the answers against the references."""
    generated = generate_answers(model, tokenizer, prompting, [r.messages for r in records],
                                 batch_size=batch_size, max_new_tokens=max_new_tokens, progress=progress)
    references = [r.reference for r in records]
    metrics, per_record = score(generated.answers, references)
    metrics.update(seconds=generated.seconds, records_per_s=generated.records_per_s)
    rows = []
    for i, (record, prompt, answer, own) in enumerate(zip(records, generated.prompts, generated.answers,
                                                         per_record, strict=True)):
        rows.append({"model": label, "index": i, "where": record.where, "prompt": prompt,
                     "prediction": answer, "reference": record.reference, **own})
    return Evaluation(label, metrics, rows)


def metrics_json(evaluation: Evaluation) -> dict:
    """What `--json` prints for one model: its label and its metrics."""
    return {"model": evaluation.label, **evaluation.metrics}


def predictions_jsonl(evaluations: list[Evaluation]) -> str:
    """One JSON line per record and model: model, index, where, prompt, prediction, reference, scores."""
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for e in evaluations for row in e.rows)


def metrics_table(evaluations: list[Evaluation]) -> str:
    """A plain table, one row per model; BLEU, ROUGE and exact match in percent, lengths in characters."""
    heads = ["model"] + [head for _, head, _ in COLUMNS]
    rows = [[e.label] + [fmt.format(e.metrics[key]) if key in e.metrics else "-" for key, _, fmt in COLUMNS]
            for e in evaluations]
    return plain_table(heads, rows, text_columns=1)


def plain_table(heads: list[str], rows: list[list[str]], text_columns: int) -> str:
    """Aligned columns under a rule: the first `text_columns` to the left, the numbers to the right."""
    widths = [max(len(row[i]) for row in [heads, *rows]) for i in range(len(heads))]

    def line(cells):
        return "  ".join(c.ljust(w) if i < text_columns else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()
    return "\n".join([line(heads), "  ".join("-" * w for w in widths), *map(line, rows)])
