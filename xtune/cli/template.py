"""`xtune template list|render|export`: inspect the chat templates the registry holds.

`render` shows exactly what training and chat will see, with the trained spans in `--json`;
`export` prints the jinja chat_template that converted models carry. A conversation the template
refuses (a system turn Gemma cannot take, broken alternation, an unknown role) is an `Error:` line, exit 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from xtune.errors import DataError, UsageError


def add_parser(subparsers, common):
    p = subparsers.add_parser("template", parents=[common], help="list, render and export chat templates",
                              description="List, render and export chat templates.")
    sub = p.add_subparsers(title="actions", metavar="ACTION")
    p.set_defaults(func=lambda args: _missing_action(p))

    ls = sub.add_parser("list", parents=[common], help="one template name per line")
    ls.add_argument("--json", action="store_true",
                    help="a JSON list with families, stop words and references")
    ls.set_defaults(func=run_list)

    render = sub.add_parser("render", parents=[common], help="render a conversation (JSON list of messages)")
    render.add_argument("name", help="template name (see 'xtune template list')")
    render.add_argument("--messages", required=True, metavar="FILE",
                        help='JSON file holding a list of {"role", "content"} objects ("-" reads stdin)')
    render.add_argument("--add-generation-prompt", action="store_true",
                        help="end with the assistant's prompt")
    render.add_argument("--no-thinking", action="store_true",
                        help="render with enable_thinking=False (Qwen3)")
    render.add_argument("--bos-token", help="the tokenizer's BOS text (default: the template's reference)")
    render.add_argument("--eos-token", help="the tokenizer's EOS text (default: the template's reference)")
    render.add_argument("--date-string", help="date for templates that print one (Llama-3.1 / 3.2)")
    render.add_argument("--json", action="store_true",
                        help="print {text, segments} with each segment's train flag")
    render.set_defaults(func=run_render)

    export = sub.add_parser("export", parents=[common], help="print the equivalent jinja chat_template")
    export.add_argument("name", help="template name (see 'xtune template list')")
    export.add_argument("--generation-tags", action="store_true",
                        help="wrap trained text in {% generation %} blocks (transformers' assistant mask)")
    export.set_defaults(func=run_export)


def _missing_action(parser) -> int:
    raise UsageError("template: choose an action: list, render or export", hint="see 'xtune template --help'")


def template_families(template, registry) -> list[str]:
    """The model families a template serves: those whose adapter defaults to it, and any it names itself."""
    served = [a.name for a in registry.model_adapters if a.default_template == template.name]
    return sorted(set(served) | set(template.families))


def run_list(args) -> int:
    from xtune.plugins import get_registry

    registry = get_registry()
    templates = sorted(registry.chat_templates, key=lambda t: t.name)
    if args.json:
        fields = ("name", "description", "stop_words", "reference", "plugin")
        rows = [{**{f: getattr(t, f) for f in fields}, "families": template_families(t, registry)}
                for t in templates]
        json.dump(rows, sys.stdout, indent=1, ensure_ascii=False)
        sys.stdout.write("\n")
        return 0
    for t in templates:
        print(t.name)
    return 0


def _read_messages(path: str) -> list:
    where = "stdin" if path == "-" else path
    try:
        raw = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"messages file {path!r} not found") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{where}: not UTF-8 text (byte {exc.start})") from None
    try:
        messages = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: line {exc.lineno}: invalid JSON: {exc.msg}") from None
    if not isinstance(messages, list):
        raise DataError(f"{where}: expected a JSON list of messages, got {type(messages).__name__}")
    return messages


def run_render(args) -> int:
    from xtune.plugins import get_registry
    from xtune.templates import get_template, render_segments

    registry = get_registry()
    template = get_template(args.name, registry)
    messages = _read_messages(args.messages)
    try:
        segments = render_segments(template, messages, args.add_generation_prompt, bos_token=args.bos_token,
                                   eos_token=args.eos_token, date_string=args.date_string,
                                   enable_thinking=not args.no_thinking, registry=registry)
    except UsageError as exc:
        raise UsageError(f"{args.messages}: {exc.message}", hint=exc.hint) from None
    text = "".join(s.text for s in segments)
    if args.json:
        json.dump({"template": template.name, "text": text, "segments": [s.to_dict() for s in segments]},
                  sys.stdout, indent=1, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(text)  # exactly the text: no newline added, so it compares byte for byte
    return 0


def run_export(args) -> int:
    from xtune.plugins import get_registry
    from xtune.templates.export import export_jinja

    sys.stdout.write(export_jinja(args.name, generation_tags=args.generation_tags, registry=get_registry()))
    return 0
