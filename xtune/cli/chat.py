"""`xtune chat MODEL`: talk to a model, a model + adapter, or a 4/8-bit model; `--image FILE` shows a
vision-language model a picture with the first message (`/image PATH` in the REPL, for later ones).

With `--prompt TEXT`, or with text piped on stdin, it prints one answer and exits 0; otherwise it is an
interactive chat with streamed answers (see `xtune.chat.repl`).
"""

from __future__ import annotations

import sys


def add_parser(subparsers, common):
    p = subparsers.add_parser("chat", parents=[common],
                              help="chat with a model (optionally adapter, 4/8-bit)",
                              description="Chat with a model: a local folder, a hub id, modelscope://ID or "
                                          "a GGUF file. Interactive unless --prompt is given or stdin is "
                                          "piped.")
    add_model_arguments(p)
    p.add_argument("--system", metavar="TEXT", help="system prompt")
    p.add_argument("--prompt", metavar="TEXT", help="answer this one message and exit")
    p.add_argument("--image", action="append", default=[], metavar="FILE",
                   help="a picture for a vision-language model, with the first message (repeatable)")
    p.add_argument("--max-new-tokens", type=int, default=512, metavar="N")
    p.add_argument("--temperature", type=float, default=0.7, metavar="T", help="0 for greedy decoding")
    p.add_argument("--top-p", type=float, default=0.9, metavar="P")
    p.add_argument("--top-k", type=int, default=40, metavar="K")
    p.add_argument("--repetition-penalty", type=float, default=1.0, metavar="R")
    p.add_argument("--seed", type=int, metavar="N", help="random seed for sampling")
    p.add_argument("--no-stream", action="store_true", help="print each answer when it is complete")
    p.set_defaults(func=run)


def add_model_arguments(p) -> None:
    """MODEL and how to load it and talk to it, as `xtune chat` and `xtune serve` both take them."""
    p.add_argument("model", metavar="MODEL", help="folder, hub id, modelscope://ID, or path/to/model.gguf")
    p.add_argument("--adapter", metavar="DIR", help="PEFT adapter folder to apply (e.g. WORK_DIR/hf)")
    p.add_argument("--bits", type=int, choices=[4, 8],
                   help="load the model in 4-bit NF4 or 8-bit (bitsandbytes)")
    p.add_argument("--dtype", default="auto",
                   help="precision: auto (bf16 where the GPU or CPU computes it natively, else fp16 on GPU / "
                                         "fp32 on CPU), bfloat16, float16, float32")
    p.add_argument("--prompt-template", metavar="NAME",
                   help="xtune chat template (default: the model's own chat_template, else its family's)")
    p.add_argument("--source", default="auto", choices=["auto", "hf", "modelscope", "local"],
                   help="where MODEL lives (auto: a local path, else the Hugging Face hub)")


def _check(args) -> None:
    from xtune.errors import UsageError

    if args.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens {args.max_new_tokens}: must be at least 1")
    if args.temperature < 0:
        raise UsageError(f"--temperature {args.temperature}: must be 0 (greedy) or more")
    if not 0 < args.top_p <= 1:
        raise UsageError(f"--top-p {args.top_p}: must be in (0, 1]")
    if args.top_k < 0 or args.repetition_penalty <= 0:
        raise UsageError("--top-k must be >= 0 and --repetition-penalty > 0")
    if args.prompt is not None and not args.prompt.strip():
        raise UsageError("--prompt is empty")
    from pathlib import Path

    from xtune.data.images import check_image

    for image in args.image:  # before the model loads
        problem = check_image(Path(image).expanduser())
        if problem:
            raise UsageError(f"--image {image!r}: {problem}")
    if args.prompt_template:
        from xtune.plugins import get_registry
        from xtune.templates import get_template

        get_template(args.prompt_template, get_registry())  # fail before loading the model


def _session(model, tokenizer, args, settings, registry):
    """A chat session; a vision-language model's (with its processor) gets the --image pictures."""
    from xtune.chat.session import ChatSession
    from xtune.chat.vision import VisionChatSession
    from xtune.errors import UsageError
    from xtune.models.processors import is_processor

    kwargs = dict(registry=registry, template=args.prompt_template, system=args.system, settings=settings,
                  model_name=args.model)
    if not is_processor(tokenizer):
        if args.image:
            raise UsageError(f"--image: {args.model!r} is a text model and cannot see images",
                             hint="chat with a vision-language model (e.g. a LLaVA recipe's WORK_DIR/hf)")
        return ChatSession(model, tokenizer, **kwargs)
    session = VisionChatSession(model, tokenizer, **kwargs)
    for image in args.image:
        session.add_image(image)
    return session


def run(args) -> int:
    _check(args)
    piped = None
    if args.prompt is None and not sys.stdin.isatty():
        piped = sys.stdin.read().strip()
        if not piped:
            from xtune.errors import UsageError

            raise UsageError("no message: stdin was empty", hint="pass --prompt TEXT, or run in a terminal")
    import warnings

    from transformers.utils import logging as hf_logging

    warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecation notes, not the user's

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    from xtune.chat.repl import answer_once, interactive
    from xtune.chat.session import GenerationSettings
    from xtune.models.build import load_for_inference
    from xtune.plugins import get_registry

    registry = get_registry()
    model, tokenizer = load_for_inference(args.model, registry=registry, adapter=args.adapter, bits=args.bits,
                                          dtype=args.dtype, source=args.source)
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                  top_p=args.top_p, top_k=args.top_k,
                                  repetition_penalty=args.repetition_penalty,
                                  seed=args.seed)
    session = _session(model, tokenizer, args, settings, registry)
    stream = not args.no_stream
    text = args.prompt if args.prompt is not None else piped
    if text is not None:
        return answer_once(session, text, stream)
    return interactive(session, stream)
