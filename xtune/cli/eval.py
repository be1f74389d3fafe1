"""`xtune eval MODEL`: did the fine-tune help? Generation metrics on a test set, or lm-eval benchmarks.

`--data FILE` (any format xtune trains on): every record's last answer is the reference, the conversation
before it the prompt, rendered as `xtune chat` renders it; the model answers greedily (batched, left
padded) and the answers are scored with BLEU-4, ROUGE-1/2/L, exact match and their mean length
(`xtune.evaluate`). `--compare OTHER` (repeatable) evaluates more models on the same records, one table
row each: a PEFT adapter folder goes on MODEL, any other model stands alone. `--out FILE.jsonl` keeps
every prediction beside its reference. `--tasks` runs lm-evaluation-harness tasks instead
(`xtune.evaluate.harness`). Every input is checked before the first model loads.
"""

from __future__ import annotations

import json
import sys


def add_parser(subparsers, common):
    p = subparsers.add_parser(
        "eval", parents=[common], help="score a model (or base vs tuned) on a test set or benchmark tasks",
        description="Generate answers to a test set and score them (BLEU-4, ROUGE-1/2/L, exact match), or "
                    "run lm-evaluation-harness tasks (--tasks); --compare puts several models in one table.")
    p.add_argument("model", metavar="MODEL", help="folder, hub id, modelscope://ID, or path/to/model.gguf")
    p.add_argument("--adapter", metavar="DIR", help="PEFT adapter folder to apply to MODEL")
    p.add_argument("--compare", action="append", default=[], metavar="OTHER",
                   help="another model, or an adapter folder for MODEL, scored on the same records "
                        "(repeatable)")
    data = p.add_argument_group("test set (generation metrics)")
    data.add_argument("--data", metavar="FILE",
                      help="test file (json, jsonl, csv, parquet, xlsx; or a folder of them)")
    data.add_argument("--dataset-map", metavar="MAP",
                      help="record format / dataset map (default: from the first record: conversations -> "
                           "sharegpt, messages -> openai, instruction -> alpaca)")
    data.add_argument("--template", "--prompt-template", dest="template", metavar="NAME",
                      help="xtune chat template (default: as xtune chat: the model's own, else its family's)")
    data.add_argument("--system", default="", metavar="TEXT", help="system prompt for records without one")
    data.add_argument("--self-cognition-name", metavar="NAME", help="fills {{name}} / <NAME> in the records")
    data.add_argument("--self-cognition-author", metavar="AUTHOR",
                      help="fills {{author}} / <AUTHOR> in the records")
    data.add_argument("--max-new-tokens", type=int, default=256, metavar="N",
                      help="longest answer, in tokens (default 256); greedy decoding")
    data.add_argument("--batch-size", type=int, default=8, metavar="B",
                      help="prompts generated (or lm-eval requests run) together (default 8)")
    data.add_argument("--out", metavar="FILE.jsonl", help="write every prediction beside its reference")
    bench = p.add_argument_group("benchmarks (lm-evaluation-harness, pip install 'xtune[lm-eval]')")
    bench.add_argument("--tasks", metavar="A,B|TASK.yaml", help="lm-eval task names or local task YAML files")
    bench.add_argument("--num-fewshot", type=int, metavar="K", help="few-shot examples per question")
    bench.add_argument("--apply-chat-template", action="store_true",
                       help="render the tasks' prompts with the model's chat template")
    p.add_argument("--limit", type=int, metavar="N", help="the first N records (per task with --tasks)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON (a list with --compare)")
    p.add_argument("--dtype", default="auto",
                   help="precision: auto (bf16 where the GPU or CPU computes it natively, else fp16 on GPU / "
                        "fp32 on CPU), bfloat16, float16, float32")
    p.add_argument("--bits", type=int, choices=[4, 8], help="load in 4-bit NF4 or 8-bit (bitsandbytes)")
    p.add_argument("--source", default="auto", choices=["auto", "hf", "modelscope", "local"],
                   help="where MODEL lives (auto: a local path, else the Hugging Face hub)")
    p.set_defaults(func=run)


def _check(args) -> None:
    from xtune.errors import UsageError

    if bool(args.data) == bool(args.tasks):
        raise UsageError("give either --data FILE (generation metrics) or --tasks NAMES (lm-eval benchmarks)",
                         hint="e.g. xtune eval MODEL --data test.json --compare ADAPTER")
    for flag, value in (("--max-new-tokens", args.max_new_tokens), ("--batch-size", args.batch_size),
                        ("--limit", args.limit)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} {value}: must be at least 1")
    if args.num_fewshot is not None and args.num_fewshot < 0:
        raise UsageError(f"--num-fewshot {args.num_fewshot}: must be 0 or more")
    if args.tasks and args.out:
        raise UsageError("--out writes the predictions of --data; lm-eval tasks have none",
                         hint="leave --out out, or use --json for the task metrics")


def model_specs(args) -> list[tuple[str, str | None, str]]:
    """(model, adapter, label) of MODEL and of each --compare: an adapter folder goes on MODEL."""
    from xtune.models.adapters import is_adapter_folder
    from xtune.models.sources import resolve_source

    specs = [(args.model, args.adapter, args.model + (f" + {args.adapter}" if args.adapter else ""))]
    for other in args.compare:
        if is_adapter_folder(other):
            specs.append((args.model, other, f"{args.model} + {other}"))
        else:
            specs.append((other, None, other))
    for model, adapter, _ in specs:  # a typo fails now, not after the first model's evaluation
        resolve_source(model, args.source)
        if adapter:
            from xtune.models.adapters import check_adapter_dir

            check_adapter_dir(adapter)
    return specs


def _load(model: str, adapter: str | None, args, registry):
    from xtune.errors import UsageError
    from xtune.models.build import load_for_inference
    from xtune.models.processors import is_processor

    loaded, tokenizer = load_for_inference(model, registry=registry, adapter=adapter, bits=args.bits,
                                           dtype=args.dtype, source=args.source)
    if is_processor(tokenizer):
        raise UsageError(f"{model!r} is a vision-language model; xtune eval scores text models")
    return loaded, tokenizer


def _quiet_libraries() -> None:
    import warnings

    from transformers.utils import logging as hf_logging

    warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecation notes, not the user's
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def run(args) -> int:
    _check(args)
    from xtune.plugins import get_registry

    registry = get_registry()
    if args.tasks:
        return _run_tasks(args, registry)
    from xtune.evaluate.testset import load_test_set
    from xtune.fileio import check_output_file
    from xtune.templates import get_template

    if args.template:
        get_template(args.template, registry)  # unknown names: the closest ones, before any model loads
    out = check_output_file(args.out, True, ".jsonl", inputs=[args.data]) if args.out else None
    records = load_test_set(args.data, registry=registry, dataset_map=args.dataset_map, system=args.system,
                            limit=args.limit,
                            self_cognition=(args.self_cognition_name, args.self_cognition_author))
    specs = model_specs(args)
    _quiet_libraries()
    evaluations = [_evaluate(spec, records, args, registry) for spec in specs]
    from xtune.evaluate.run import metrics_json, metrics_table, predictions_jsonl
    from xtune.fileio import atomic_write_text

    if out is not None:
        atomic_write_text(out, predictions_jsonl(evaluations))
    if args.json:
        found = [metrics_json(e) for e in evaluations]
        print(json.dumps(found if args.compare else found[0], ensure_ascii=False, indent=1))
    else:
        print(metrics_table(evaluations))
        if out is not None:
            print(f"predictions: {out}", file=sys.stderr)
    return 0


def _evaluate(spec, records, args, registry):
    """One model's evaluation; the model is let go before the next one loads."""
    import gc

    from xtune.chat.session import ChatSession
    from xtune.evaluate.generate import Prompting
    from xtune.evaluate.run import evaluate_model

    model_path, adapter, label = spec
    model, tokenizer = _load(model_path, adapter, args, registry)
    session = ChatSession(model, tokenizer, registry=registry, template=args.template, model_name=model_path)
    prompting = Prompting(session.render, session.stop_words, session.eos_token_ids)
    try:
        return evaluate_model(model, tokenizer, prompting, records, label=label, batch_size=args.batch_size,
                              max_new_tokens=args.max_new_tokens,
                              progress=label)
    finally:
        del model, session
        gc.collect()


def _run_tasks(args, registry) -> int:
    from xtune.evaluate.harness import check_tasks, run_tasks, tasks_table

    tasks = check_tasks(args.tasks)  # unknown names, unreadable YAML, data not available: before loading
    specs = model_specs(args)
    _quiet_libraries()
    results = []
    for model_path, adapter, label in specs:
        model, tokenizer = _load(model_path, adapter, args, registry)
        results.append(run_tasks(model, tokenizer, tasks, label=label, limit=args.limit,
                                 num_fewshot=args.num_fewshot, apply_chat_template=args.apply_chat_template,
                                 batch_size=args.batch_size))
        del model
    if args.json:
        print(json.dumps(results if args.compare else results[0], ensure_ascii=False, indent=1))
    else:
        print(tasks_table(results))
    return 0
