"""`xtune eval --data`: test records from the data layer, batched greedy answers, and metrics that are
exactly sacrebleu's and rouge-score's (Chinese segmented with jieba), base and adapter side by side.

The metric tests compare with the libraries called directly on the same texts; the CLI tests run on the
tiny model of test_export_helpers, whose answers are random text: references are made from its own
answers (some equal, some overlapping, some in Chinese), so every metric has something to count.
"""

from __future__ import annotations

import json
import re

import pytest
from test_export_helpers import tiny_base_and_adapter, tiny_model_dir

from xtune.cli.main import main
from xtune.plugins import get_registry

REGISTRY = get_registry()
CJK = re.compile(r"[\u4e00-\u9fff]")

ENGLISH = [("The capital of France is Paris.", "Paris is the capital of France."),
           ("I am Nova, an assistant made by the xtune demo.",
            "I am Nova, an AI assistant built by the xtune demo."),
           ("Hello there!", "Hello there!"),
           ("Cats sleep a lot.", "Dogs bark loudly at night.")]
CHINESE = [("我是 Nova，由 xtune 演示项目开发的人工智能助手。",
            "您好，我是 Nova，一个由 xtune 演示项目开发的 AI 助手。"),
           ("法国的首都是巴黎。", "巴黎是法国的首都。"),
           ("你好！", "你好！")]


# ------------------------------------------------------------------------ the libraries, called directly
def _jieba_words(text: str) -> list[str]:
    import jieba

    return [w for w in jieba.cut(text) if w.strip()]


class _JiebaTokens:  # rouge-score's tokenizer interface: jieba words, lower-cased, no punctuation
    def tokenize(self, text):
        return [w.lower() for w in _jieba_words(text) if re.search(r"\w", w)]


def direct_bleu(predictions, references) -> float:
    import sacrebleu

    def seg(p, r, text):
        return " ".join(_jieba_words(text)) if CJK.search(p + r) else text

    hyps = [seg(p, r, p) for p, r in zip(predictions, references, strict=True)]
    refs = [seg(p, r, r) for p, r in zip(predictions, references, strict=True)]
    return sacrebleu.corpus_bleu(hyps, [refs]).score


def direct_rouge_l(predictions, references) -> float:
    from rouge_score import rouge_scorer

    plain = rouge_scorer.RougeScorer(["rougeL"])
    jieba = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_JiebaTokens())
    scores = [(jieba if CJK.search(p + r) else plain).score(r, p)["rougeL"].fmeasure
              for p, r in zip(predictions, references, strict=True)]
    return 100 * sum(scores) / len(scores)


@pytest.mark.parametrize("pairs", [ENGLISH, CHINESE, ENGLISH + CHINESE], ids=["en", "zh", "mixed"])
def test_metrics_equal_sacrebleu_and_rouge_score(pairs):
    from xtune.evaluate.metrics import score

    predictions, references = [p for p, _ in pairs], [r for _, r in pairs]
    metrics, per_record = score(predictions, references)
    assert metrics["bleu-4"] == pytest.approx(direct_bleu(predictions, references), abs=1e-9)
    assert metrics["rouge-l"] == pytest.approx(direct_rouge_l(predictions, references), abs=1e-9)
    assert 0 < metrics["bleu-4"] < 100 and 0 < metrics["rouge-l"] < 100
    exact = [p == r for p, r in pairs]
    assert [row["exact_match"] for row in per_record] == exact
    assert metrics["exact_match"] == pytest.approx(100 * sum(exact) / len(exact))
    assert metrics["records"] == len(pairs)
    assert metrics["mean_length"] == pytest.approx(sum(len(p) for p in predictions) / len(pairs))


def test_chinese_is_scored_by_words_not_dropped():
    """rouge-score's own tokenizer drops every CJK character: without jieba a Chinese answer scores 0."""
    from xtune.evaluate.metrics import rouge_scores

    row = rouge_scores(["法国的首都是巴黎。"], ["巴黎是法国的首都。"])[0]
    assert row["rouge-1"] == pytest.approx(100.0) and row["rouge-2"] < 100  # same words, another order
    assert rouge_scores(["Paris"], ["巴黎"])[0]["rouge-1"] == 0


def test_exact_match_ignores_surrounding_and_repeated_whitespace_only():
    from xtune.evaluate.metrics import exact_match

    assert exact_match(" Hello  there \n", "Hello there")
    assert not exact_match("Hello there.", "Hello there") and not exact_match("hello there", "Hello there")


# ------------------------------------------------------------------------ test records from the data layer
def _write(path, records):
    path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return path


def test_reference_is_the_last_answer_and_prompt_the_conversation_before(tmp_path):
    from xtune.evaluate.testset import load_test_set

    sharegpt = _write(tmp_path / "chat.json", [{"conversations": [
        {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"},
        {"from": "human", "value": "Who are you?"}, {"from": "gpt", "value": "I am {{name}}."}]}])
    [record] = load_test_set(str(sharegpt), registry=REGISTRY, system="Be brief.")
    assert record.reference == "I am {{name}}."
    assert record.messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                               {"role": "assistant", "content": "Hello!"},
                               {"role": "user", "content": "Who are you?"}]
    alpaca = _write(tmp_path / "a.json", [{"instruction": "Who made you?", "output": "{{author}} did."}] * 3)
    records = load_test_set(str(alpaca), registry=REGISTRY, dataset_map="self_cognition", limit=2,
                            self_cognition=("Nova", "Ada"))
    assert len(records) == 2 and records[0].reference == "Ada did." and records[0].question == "Who made you?"


def test_generation_stops_at_stop_tokens_and_words(tmp_path):
    import torch

    from xtune.evaluate.generate import Prompting, generate_answers
    from xtune.models.build import load_for_inference

    model, tokenizer = load_for_inference(str(tiny_model_dir(tmp_path / "m")), registry=REGISTRY)
    hello = tokenizer.encode("Hello", add_special_tokens=False)[0]
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    head = torch.nn.Linear(model.lm_head.in_features, model.lm_head.out_features, bias=True)
    with torch.no_grad():  # always "Hello" (greedy repeats it)
        head.weight.zero_()
        head.bias.fill_(-10.0)
        head.bias[hello] = 10.0
    model.lm_head = head
    prompting = Prompting(lambda m: m[-1]["content"], ["loHel"], [end])
    out = generate_answers(model, tokenizer, prompting, [[{"role": "user", "content": "Hi"}]] * 3,
                           batch_size=2, max_new_tokens=6, progress=False)
    assert out.answers == ["Hel"] * 3  # "HelloHello...": cut at the text stop word
    with torch.no_grad():
        head.bias[end] = 20.0
    out = generate_answers(model, tokenizer, prompting, [[{"role": "user", "content": "Hi"}]],
                           max_new_tokens=6, progress=False)
    assert out.answers == [""]


def test_batched_left_padded_answers_equal_one_at_a_time(tmp_path):
    from xtune.evaluate.generate import generate_answers, recipe_prompting
    from xtune.models.build import load_for_inference

    model, tokenizer = load_for_inference(str(tiny_model_dir(tmp_path / "m", hidden=32)), registry=REGISTRY,
                                          dtype="float32")
    prompting = recipe_prompting("smollm2_chat", tokenizer, model, registry=REGISTRY)
    questions = ["Hi", "Tell me a joke about cats, please, a long one.", "Who are you?", "2 + 2?", "Paris"]
    conversations = [[{"role": "user", "content": q}] for q in questions]
    one = generate_answers(model, tokenizer, prompting, conversations, batch_size=1, max_new_tokens=8,
                           progress=False)
    batched = generate_answers(model, tokenizer, prompting, conversations, batch_size=4, max_new_tokens=8,
                               progress=False)
    assert batched.answers == one.answers and batched.prompts == one.prompts
    assert one.prompts[0].endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


# ------------------------------------------------------------------------ the command
@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tiny_base_and_adapter(tmp_path_factory.mktemp("eval"))


QUESTIONS = ["Who are you?", "What is the capital of France?", "你是谁？", "Tell me a joke.",
             "法国的首都是哪里？", "Hello"]


def _eval_json(args: list[str], capsys) -> list[dict]:
    assert main(["eval", *args, "--json", "--max-new-tokens", "6", "--batch-size", "4"]) == 0
    found = json.loads(capsys.readouterr().out)
    return found if isinstance(found, list) else [found]


@pytest.mark.integration
def test_compare_base_and_adapter_metrics_equal_the_libraries_on_the_written_predictions(models, tmp_path,
                                                                                          capsys):
    base, adapter = models
    first = _write(tmp_path / "first.json", [{"instruction": q, "output": "x"} for q in QUESTIONS])
    out = tmp_path / "first.jsonl"
    _eval_json([str(base), "--data", str(first), "--out", str(out)], capsys)
    said = [json.loads(line)["prediction"] for line in out.read_text(encoding="utf-8").splitlines()]
    # references from the base model's own answers: equal, overlapping, Chinese around them, unrelated
    references = [said[0], said[1] + " and more words", "我是" + said[2] + "，一个助手。", "Nothing alike.",
                  "巴黎是法国的首都。", said[5]]
    data = _write(tmp_path / "test.json", [{"instruction": q, "output": r}
                                           for q, r in zip(QUESTIONS, references, strict=True)])
    out = tmp_path / "predictions.jsonl"
    found = _eval_json([str(base), "--data", str(data), "--compare", str(adapter), "--out", str(out)], capsys)
    assert [m["model"] for m in found] == [str(base), f"{base} + {adapter}"]
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 2 * len(QUESTIONS)
    for metrics in found:
        mine = [r for r in rows if r["model"] == metrics["model"]]
        predictions, refs = [r["prediction"] for r in mine], [r["reference"] for r in mine]
        assert refs == references
        assert metrics["bleu-4"] == pytest.approx(direct_bleu(predictions, refs), abs=1e-9)
        assert metrics["rouge-l"] == pytest.approx(direct_rouge_l(predictions, refs), abs=1e-9)
        assert metrics["records"] == len(QUESTIONS)
        assert {"rouge-1", "rouge-2", "exact_match", "mean_length", "records_per_s"} <= set(metrics)
    base_metrics = found[0]
    assert base_metrics["exact_match"] >= 100 * 2 / len(QUESTIONS)  # said[0] and said[5] come back
    assert base_metrics["bleu-4"] > 0 and base_metrics["rouge-l"] > 0
    # the prompt is the one xtune chat renders: the model's own (xtune) chat template
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    assert rows[2]["prompt"] == tokenizer.apply_chat_template([{"role": "user", "content": QUESTIONS[2]}],
                                                              tokenize=False, add_generation_prompt=True)


@pytest.mark.integration
def test_table_has_one_row_per_model(models, tmp_path, capsys):
    base, adapter = models
    data = _write(tmp_path / "t.json", [{"instruction": q, "output": "Paris."} for q in QUESTIONS[:2]])
    assert main(["eval", str(base), "--adapter", str(adapter), "--data", str(data), "--compare", str(base),
                 "--max-new-tokens", "3", "--limit", "1"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines[0].split()[:4] == ["model", "records", "BLEU-4", "ROUGE-1"] and len(lines) == 4
    assert lines[2].startswith(f"{base} + {adapter}") and lines[3].split()[:2] == [str(base), "1"]
    assert "rec/s" in captured.err  # the progress bar, on stderr


@pytest.mark.parametrize("case, expect", [
    ("no_reference", "has no reference answer"),
    ("no_output_field", "field 'output': is missing"),
    ("missing_file", "does not exist"),
    ("unknown_map", "unknown dataset map 'alpacca'"),
    ("preference_map", "holds pairs records"),
    ("unknown_format", "cannot tell the format"),
    ("both", "give either --data"),
    ("bad_limit", "--limit 0"),
])
def test_bad_input_is_one_error_line_exit_2_and_no_out_file(models, tmp_path, capsys, case, expect):
    base, _ = models
    good = [{"instruction": "Hi", "output": "Hello"}]
    files = {"no_reference": [{"instruction": "Hi", "output": "   "}] + good,
             "no_output_field": [{"instruction": "Hi"}, {"instruction": "Yo"}],
             "unknown_format": [{"question": "Hi", "answer": "Hello"}]}
    data = _write(tmp_path / "test.json", files.get(case, good))
    args = {"missing_file": ["--data", str(tmp_path / "missing.json")],
            "unknown_map": ["--data", str(data), "--dataset-map", "alpacca"],
            "preference_map": ["--data", str(data), "--dataset-map", "preference"],
            "both": ["--data", str(data), "--tasks", "mmlu"],
            "bad_limit": ["--data", str(data), "--limit", "0"]}.get(case, ["--data", str(data)])
    out = tmp_path / "out.jsonl"
    assert main(["eval", str(base), *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: ") and expect in err[0], err
    assert not out.exists() and not list(tmp_path.glob(".out.jsonl*"))


def test_a_missing_compare_model_fails_before_any_model_loads(models, tmp_path, capsys):
    base, _ = models
    data = _write(tmp_path / "t.json", [{"instruction": "Hi", "output": "Hello"}])
    assert main(["eval", str(base), "--data", str(data), "--compare", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "rec/s" not in err
