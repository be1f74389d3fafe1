"""`xtune reward MODEL --prompt P --response R`: a reward model's score for an answer.

MODEL is a reward model folder (`WORK_DIR/hf` of a `reward` recipe, or `convert pth_to_hf`): a full
sequence-classification model, or a PEFT adapter of one. The conversation is rendered with the chat template
the model was trained with (read from its xtune_info.json, or --prompt-template) and scored at its last
token, exactly as training scored it. Several --response values are scored against the same prompt.
"""

from __future__ import annotations

import json


def add_parser(subparsers, common):
    p = subparsers.add_parser("reward", parents=[common], help="score answers with a reward model",
                              description="Print a reward model's score for each --response to --prompt.")
    p.add_argument("model", metavar="MODEL", help="reward model folder (full model or PEFT adapter)")
    p.add_argument("--prompt", required=True, metavar="TEXT", help="the user message")
    p.add_argument("--response", required=True, action="append", metavar="TEXT",
                   help="an answer to score (repeat to compare several)")
    p.add_argument("--system", metavar="TEXT", help="system prompt")
    p.add_argument("--prompt-template", metavar="NAME", help="xtune chat template (default: the one the "
                                                             "model was trained with)")
    p.add_argument("--json", action="store_true", help="print the scores as JSON")
    p.set_defaults(func=run)


def template_of(model: str, given: str | None, registry) -> str:
    from xtune.errors import UsageError
    from xtune.export.model_card import read_info
    from xtune.templates import get_template

    name = given or read_info(model).get("prompt_template")
    if not name:
        raise UsageError(f"{model!r} does not say which chat template it was trained with",
                         hint="pass --prompt-template NAME (see `xtune template list`)")
    return get_template(name, registry).name


def run(args) -> int:
    from xtune.models.build import load_reward_model
    from xtune.models.reward import check_reward_model
    from xtune.objectives.reward import score_conversations
    from xtune.plugins import get_registry

    check_reward_model(args.model)  # before the template question: an SFT model has one too
    registry = get_registry()
    template = template_of(args.model, args.prompt_template, registry)
    model, tokenizer = load_reward_model(args.model)
    head = [{"role": "system", "content": args.system}] if args.system else []
    conversations = [head + [{"role": "user", "content": args.prompt}, {"role": "assistant", "content": r}]
                     for r in args.response]
    scores = score_conversations(model, tokenizer, template, conversations, registry=registry)
    if args.json:
        print(json.dumps([{"response": r, "score": s} for r, s in zip(args.response, scores, strict=True)],
                         ensure_ascii=False, indent=1))
        return 0
    for response, score in zip(args.response, scores, strict=True):
        print(f"{score:.4f}\t{response}" if len(scores) > 1 else f"{score:.4f}")
    return 0
