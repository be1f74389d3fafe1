"""Scores of predicted answers against reference answers: BLEU-4, ROUGE-1/2/L, exact match, length.

The numbers are those of the standard libraries, so they can be checked and compared with other tools:
BLEU-4 is sacrebleu's corpus BLEU (its default 13a tokenizer), ROUGE is rouge-score's F1 averaged over
the records, all times 100. Neither library segments Chinese (rouge-score's tokenizer even drops every
non-ASCII character), so a record whose prediction or reference holds CJK characters is segmented into
words with jieba first, as LLaMA-Factory's predict mode does: for BLEU the words are joined with spaces
(sacrebleu then counts them as tokens, punctuation included, as it does for English); for ROUGE they are
the tokens themselves, lower-cased and without punctuation, as rouge-score treats English. A record is
an exact match when prediction and reference are equal once surrounding and repeated whitespace is
ignored.
"""

from __future__ import annotations

import logging
import re

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
# Han ideographs (with extension A and the compatibility block), kana, hangul, CJK punctuation
_CJK = re.compile("[\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff"
                  "\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")


def has_cjk(text: str) -> bool:
    return bool(_CJK.search(text))


def jieba_words(text: str) -> list[str]:
    """jieba's segmentation of `text`, without the whitespace between words."""
    import jieba

    jieba.setLogLevel(logging.WARNING)  # "Building prefix dict ..." on every first use otherwise
    return [w for w in jieba.cut(text) if w.strip()]


class JiebaTokenizer:
    """rouge-score's tokenizer interface over jieba: words lower-cased, punctuation-only words dropped."""

    def tokenize(self, text: str) -> list[str]:
        return [w.lower() for w in jieba_words(text) if re.search(r"\w", w)]


def segmented(text: str, cjk: bool) -> str:
    """The text BLEU sees: a CJK record's words joined with spaces, any other record as it is."""
    return " ".join(jieba_words(text)) if cjk else text


def is_cjk_record(prediction: str, reference: str) -> bool:
    return has_cjk(prediction) or has_cjk(reference)


def exact_match(prediction: str, reference: str) -> bool:
    return " ".join(prediction.split()) == " ".join(reference.split())


def bleu4(predictions: list[str], references: list[str]) -> float:
    """sacrebleu's corpus BLEU (0-100) over the records, CJK records segmented with jieba."""
    import sacrebleu

    cjk = [is_cjk_record(p, r) for p, r in zip(predictions, references, strict=True)]
    hyps = [segmented(p, c) for p, c in zip(predictions, cjk, strict=True)]
    refs = [segmented(r, c) for r, c in zip(references, cjk, strict=True)]
    return float(sacrebleu.corpus_bleu(hyps, [refs]).score)


def rouge_scores(predictions: list[str], references: list[str]) -> list[dict[str, float]]:
    """rouge-score's F1 (0-100) of every record: {'rouge-1': .., 'rouge-2': .., 'rouge-l': ..}."""
    from rouge_score import rouge_scorer

    english = rouge_scorer.RougeScorer(list(ROUGE_TYPES))
    chinese = rouge_scorer.RougeScorer(list(ROUGE_TYPES), tokenizer=JiebaTokenizer())
    out = []
    for prediction, reference in zip(predictions, references, strict=True):
        scorer = chinese if is_cjk_record(prediction, reference) else english
        scores = scorer.score(reference, prediction)  # (target, prediction)
        out.append({f"rouge-{kind[5:].lower()}": 100.0 * scores[kind].fmeasure for kind in ROUGE_TYPES})
    return out


def score(predictions: list[str], references: list[str]) -> tuple[dict, list[dict]]:
    """(the corpus's metrics, each record's own: ROUGE F1s and exact match) for one model's answers."""
    if len(predictions) != len(references) or not predictions:
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    per_record = rouge_scores(predictions, references)
    for row, p, r in zip(per_record, predictions, references, strict=True):
        row["exact_match"] = exact_match(p, r)
    n = len(predictions)
    metrics = {"records": n, "bleu-4": bleu4(predictions, references)}
    for key in ("rouge-1", "rouge-2", "rouge-l"):
        metrics[key] = sum(row[key] for row in per_record) / n
    metrics["exact_match"] = 100.0 * sum(row["exact_match"] for row in per_record) / n
    metrics["mean_length"] = sum(len(p) for p in predictions) / n
    metrics["mean_reference_length"] = sum(len(r) for r in references) / n
    return metrics, per_record
