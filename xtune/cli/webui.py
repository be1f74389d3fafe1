"""`xtune webui`: the web page for training, watching, chatting and exporting (xtune.webui), served by Gradio.

Safe by default: it listens on 127.0.0.1; another address without `--auth USER:PASS` is refused with one
`Error:` line, since the page starts processes and reads files. Paths typed or picked on the page stay under
`--root` (default: the current folder) and xtune's cache. No public share link is ever made. Gradio is an
optional extra (`pip install 'xtune[webui]'`), imported only when the command runs.
"""

from __future__ import annotations

import os
import sys

from xtune.cli.serve import is_loopback

AUTH_ENV = "XTUNE_WEBUI_AUTH"


def add_parser(subparsers, common):
    p = subparsers.add_parser(
        "webui",
        parents=[common],
        help="a web page to train, watch, chat and export",
        description="Serve xtune's web UI (Gradio): pick a model, recipe and data, "
        "start and watch training, check data, chat (base and tuned side "
        "by side) and export. Needs xtune[webui].",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; any other needs --auth)",
    )
    p.add_argument("--port", type=int, default=7860, help="port (default 7860; 0: a free one)")
    p.add_argument(
        "--auth",
        metavar="USER:PASS",
        default=os.environ.get(AUTH_ENV) or None,
        help=f"require this login (default: ${AUTH_ENV})",
    )
    p.add_argument(
        "--root",
        default=".",
        metavar="DIR",
        help="the folder the page may read and write (default: the current one; xtune's cache too)",
    )
    p.add_argument("--lang", default="en", choices=["en", "zh"], help="the page's language (default en)")
    p.set_defaults(func=run)


def check_args(args) -> tuple[str, str] | None:
    """Refuse what cannot or must not be served, before Gradio is imported; returns the login, if any."""
    from xtune.errors import UsageError

    auth = None
    if args.auth is not None:
        user, sep, password = args.auth.partition(":")
        if not sep or not user or not password:
            raise UsageError("--auth expects USER:PASS with both parts non-empty")
        auth = (user, password)
    if not is_loopback(args.host) and auth is None:
        raise UsageError(
            f"--host {args.host} lets other machines in: set --auth USER:PASS (or ${AUTH_ENV}) so "
            "that only people with the login reach the page",
            hint="or keep the default --host 127.0.0.1",
        )
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: must be in 0..65535")
    if not os.path.isdir(os.path.expanduser(args.root)):
        raise UsageError(f"--root {args.root!r} is not a folder")
    import importlib.util

    if importlib.util.find_spec("gradio") is None:
        raise UsageError(
            "xtune webui needs gradio, which is not installed", hint="pip install 'xtune[webui]'"
        )
    return auth


def _free_port(host: str, port: int) -> int:
    """The port to serve on: `port` if it can be bound now (a taken one is one Error line, not Gradio's
    search), or a free one for 0."""
    import socket

    from xtune.errors import UsageError

    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host.strip("[]"), port))
        except OSError as exc:
            raise UsageError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                hint="choose another --port (0 takes a free one)",
            ) from None
        return sock.getsockname()[1]


def run(args) -> int:
    auth = check_args(args)
    port = _free_port(args.host, args.port)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local tool
    import signal

    from xtune.plugins import get_registry
    from xtune.webui.app import build_app, launch_kwargs

    app, ctx = build_app(get_registry(), args.root, lang=args.lang)
    app.queue(default_concurrency_limit=4)
    app.launch(**launch_kwargs(args.host, port, auth))
    import threading

    from xtune.webui.cli_calls import warm_up

    threading.Thread(target=warm_up, daemon=True).start()
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(
        f"xtune webui: http://{shown}:{port}/ (root {ctx.paths.root}"
        + (", login required" if auth else "")
        + "); Ctrl-C stops",
        file=sys.stderr,
        flush=True,
    )

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)  # a service manager's stop ends the page like Ctrl-C
    try:
        app.block_thread()
    except KeyboardInterrupt:
        pass
    finally:
        ctx.runs.stop_all()  # its runs save a checkpoint and stop; `Resume` continues them later
        app.close()
    return 0
