"""`xtune serve MODEL`: an OpenAI-compatible API (`/v1/chat/completions`, `/v1/completions`, `/v1/models`)
over a model, a model + adapter or a 4/8-bit model, loaded as `xtune chat` loads it.

Everything the command line can get wrong is refused before the model loads, with one `Error:` line and
exit status 2: a port already taken, an address beyond this machine without an API key, `--backend vllm`
where vLLM is not installed, FastAPI / uvicorn missing. The port is bound first and held while the model
loads; `--port 0` takes a free one, and the line printed when the server is ready names it.
"""

from __future__ import annotations

import ipaddress
import os
import sys

from xtune.cli.chat import add_model_arguments

API_KEY_ENV = "XTUNE_API_KEY"


def add_parser(subparsers, common):
    p = subparsers.add_parser("serve", parents=[common],
                              help="an OpenAI-compatible API over a model (optionally adapter, 4/8-bit)",
                              description="Serve a model over HTTP with OpenAI's API (/v1/chat/completions, "
                                          "/v1/completions, /v1/models): the official openai client, curl "
                                          "and OpenAI-compatible tools talk to it. Needs xtune[serve].")
    add_model_arguments(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; any other needs "
                        "--api-key)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: a free one)")
    p.add_argument("--api-key", metavar="KEY", default=os.environ.get(API_KEY_ENV) or None,
                   help=f"the key clients must send (Authorization: Bearer KEY); default: ${API_KEY_ENV}")
    p.add_argument("--model-name", metavar="NAME",
                   help="the name clients ask for (default: MODEL as given)")
    p.add_argument("--backend", default="transformers", choices=["transformers", "vllm"],
                   help="transformers (default; CPU or GPU) or vllm (a CUDA GPU with vllm installed)")
    p.add_argument("--max-batch", type=int, default=8, metavar="N",
                   help="requests generated together in one batch at most (default 8)")
    p.add_argument("--max-queue", type=int, default=64, metavar="N",
                   help="requests waiting at most; more get 503 with Retry-After (default 64)")
    p.add_argument("--max-new-tokens", type=int, default=512, metavar="N",
                   help="a chat answer's length when the request sets no max_tokens (default 512)")
    p.set_defaults(func=run)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check(args) -> None:
    from xtune.errors import UsageError

    if not is_loopback(args.host) and not args.api_key:
        raise UsageError(f"--host {args.host} lets other machines in: set --api-key KEY (or ${API_KEY_ENV}) "
                         "so that only clients with the key are answered",
                         hint="or keep the default --host 127.0.0.1")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: must be in 0..65535")
    for name in ("max_batch", "max_queue", "max_new_tokens"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} {getattr(args, name)}: must be at least 1")
    if args.api_key is not None and not args.api_key.strip():
        raise UsageError("--api-key is empty")
    missing = [m for m in ("fastapi", "uvicorn") if not _importable(m)]
    if missing:
        raise UsageError(f"xtune serve needs {' and '.join(missing)}, which are not installed",
                         hint="pip install 'xtune[serve]'")
    if args.backend == "vllm":
        from xtune.serve.vllm_backend import check_vllm

        check_vllm(args)
    if args.prompt_template:
        from xtune.plugins import get_registry
        from xtune.templates import get_template

        get_template(args.prompt_template, get_registry())  # fail before loading the model


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _bind(host: str, port: int):
    """The listening socket, bound now (a taken port fails before the model loads)."""
    import socket

    from xtune.errors import UsageError

    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                         hint="choose another --port (0 takes a free one)") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _backend(args, registry):
    """(backend, session): the model loaded as `xtune chat` loads it, and the session that renders its
    prompts."""
    if args.backend == "vllm":
        from xtune.serve.vllm_backend import VllmBackend

        backend = VllmBackend(args, registry)
        return backend, backend.session
    from xtune.chat.session import ChatSession
    from xtune.chat.vision import VisionChatSession
    from xtune.models.build import load_for_inference
    from xtune.models.processors import is_processor
    from xtune.serve.worker import TransformersBackend

    model, tokenizer = load_for_inference(args.model, registry=registry, adapter=args.adapter, bits=args.bits,
                                          dtype=args.dtype, source=args.source)
    kind = VisionChatSession if is_processor(tokenizer) else ChatSession
    session = kind(model, tokenizer, registry=registry, template=args.prompt_template, model_name=args.model)
    return TransformersBackend(model, tokenizer, session), session


def run(args) -> int:
    _check(args)
    sock = _bind(args.host, args.port)
    import time
    import warnings

    from transformers.utils import logging as hf_logging

    warnings.filterwarnings("ignore", category=FutureWarning)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    import uvicorn

    from xtune.plugins import get_registry
    from xtune.serve.app import create_app
    from xtune.serve.jobs import ServeState
    from xtune.serve.worker import Worker

    backend, _ = _backend(args, get_registry())
    worker = Worker(backend, max_batch=args.max_batch, max_queue=args.max_queue)
    state = ServeState(model_name=args.model_name or args.model, backend=backend, worker=worker,
                       api_key=args.api_key, max_new_tokens=args.max_new_tokens, created=int(time.time()))
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    config = uvicorn.Config(create_app(state), log_level="warning", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    template = backend.session.template or "the model's own chat_template"
    print(f"xtune serve: {state.model_name!r} ({backend.name}, template {template}) at "
          f"http://{shown}:{port}/v1" + (" (API key required)" if args.api_key else "")
          + "; Ctrl-C stops", file=sys.stderr, flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        worker.close()
        sock.close()
    return 0
