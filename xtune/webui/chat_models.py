"""The Chat tab's models: loaded once as `xtune chat` loads them, asked in parallel, answers streamed.

Side by side means two sessions on the same prompt: the base model alone and the base with the adapter
(loaded twice rather than toggling one PeftModel's adapter, so that both can generate at the same time).
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field

from xtune.errors import UsageError


@dataclass
class ChatRequest:
    model: str
    adapter: str = ""
    compare: bool = False
    bits: int | None = None
    template: str = ""
    settings: dict = field(default_factory=dict)


class ChatModels:
    """The sessions now loaded (one, or base + tuned), reloaded only when what to load changes."""

    def __init__(self, registry):
        self.registry = registry
        self.key = None
        self.sessions: list = []
        self.lock = threading.Lock()

    def load(self, req: ChatRequest) -> list[str]:
        """Load what `req` names; returns the column titles (base / tuned, or one model)."""
        from xtune.chat.session import GenerationSettings

        key = (req.model, req.adapter, req.compare, req.bits, req.template)
        with self.lock:
            if key != self.key:
                self.sessions, self.key = [], None
                if req.compare and not req.adapter:
                    raise UsageError(
                        "side by side needs an adapter to compare with the base",
                        hint="choose an adapter (e.g. a run's WORK_DIR/hf)",
                    )
                loads = [None, req.adapter] if req.compare else [req.adapter or None]
                self.sessions = [self._session(req, adapter) for adapter in loads]
                self.key = key
            settings = GenerationSettings(**req.settings)
            for session in self.sessions:
                session.settings = settings
        return ["base", "tuned"] if req.compare else ["answer"]

    def _session(self, req: ChatRequest, adapter: str | None):
        from xtune.chat.session import ChatSession
        from xtune.chat.vision import VisionChatSession
        from xtune.models.build import load_for_inference
        from xtune.models.processors import is_processor

        model, tokenizer = load_for_inference(
            req.model, registry=self.registry, adapter=adapter, bits=req.bits
        )
        kind = VisionChatSession if is_processor(tokenizer) else ChatSession
        return kind(
            model, tokenizer, registry=self.registry, template=req.template or None, model_name=req.model
        )

    def reset(self) -> None:
        for session in self.sessions:
            session.reset()

    def ask(self, text: str, system: str | None, image: str | None):
        """Yield the answers so far (one string per session) while every session generates."""
        sessions = list(self.sessions)
        if not sessions:
            raise UsageError("no model loaded", hint="choose a model and press Load")
        pieces: queue.Queue = queue.Queue()
        for session in sessions:
            session.system = system or None
            if image:
                if not hasattr(session, "add_image"):
                    raise UsageError("this model is a text model and cannot see pictures")
                session.add_image(image)
        answers, failures = [""] * len(sessions), []

        def work(i, session):
            try:
                session.ask(text, on_text=lambda piece: pieces.put((i, piece)))
            except Exception as exc:  # shown on the page as an Error line
                failures.append(exc)
            finally:
                pieces.put((i, None))

        for i, session in enumerate(sessions):
            threading.Thread(target=work, args=(i, session), daemon=True).start()
        running = len(sessions)
        while running:
            i, piece = pieces.get()
            if piece is None:
                running -= 1
            else:
                answers[i] += piece
            yield answers
        if failures:
            raise failures[0]

    def histories(self) -> list[list[dict]]:
        return [[dict(m) for m in s.history] for s in self.sessions]
