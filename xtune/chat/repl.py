"""The interactive loop of `xtune chat`: read a line, stream the answer, keep the history.

`/reset` forgets the conversation, `/exit` (or Ctrl-D) leaves, `/image PATH` shows a vision-language model
a picture with the next message. Ctrl-C while the model is answering stops
that answer and returns to the prompt; Ctrl-C at the prompt leaves. Either way the process ends with
exit status 0 and no traceback, because leaving a chat is not a failure.
"""

from __future__ import annotations

import sys

HELP = "Type a message. /reset starts a new conversation, /exit (or Ctrl-D) leaves."
IMAGE_HELP = " /image PATH shows the model a picture with your next message."


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def answer_once(session, text: str, stream: bool) -> int:
    """`--prompt TEXT` or piped stdin: print one answer and return the exit status."""
    if stream:
        session.ask(text, on_text=_write)
        _write("\n")
    else:
        print(session.ask(text))
    return 0


def _attach(session, path: str) -> None:
    """`/image PATH`: a picture for the next message; a mistake is said and the chat goes on."""
    from xtune.errors import UsageError

    if not hasattr(session, "add_image"):
        print("(this is a text model: it cannot see images)", file=sys.stderr)
        return
    try:
        session.add_image(path)
    except UsageError as exc:
        print(f"({exc})", file=sys.stderr)
        return
    print(f"(image {path} goes with your next message)", file=sys.stderr)


def interactive(session, stream: bool, read=input) -> int:
    """Chat until /exit, Ctrl-D or Ctrl-C at the prompt. `read` is injectable for tests."""
    try:
        import readline  # noqa: F401 - line editing and history for input()
    except ImportError:  # pragma: no cover - Windows
        pass
    print(HELP + (IMAGE_HELP if hasattr(session, "add_image") else ""), file=sys.stderr)
    while True:
        try:
            line = read(">>> ")
        except (EOFError, KeyboardInterrupt):
            _write("\n")
            return 0
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            return 0
        if text == "/reset":
            session.reset()
            print("(conversation reset)", file=sys.stderr)
            continue
        if text.startswith("/image"):
            _attach(session, text[len("/image"):].strip())
            continue
        try:
            if stream:
                session.ask(text, on_text=_write)
                _write("\n")
            else:
                print(session.ask(text))
        except KeyboardInterrupt:
            _write("\n(answer interrupted)\n")
