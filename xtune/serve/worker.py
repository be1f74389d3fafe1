"""The generation thread of `xtune serve`: a bounded queue, batches, and each row's text streamed back.

Requests wait in a queue of at most `max_queue` jobs (a full queue is refused at once, so a client gets a
503 with Retry-After rather than a long wait). One thread takes the oldest job and, from the jobs waiting
behind it, up to `max_batch - 1` more with the same sampling settings (`Sampling.batch_key`), and runs
them as one left-padded `generate`: while a batch runs, new requests gather, so the next batch is as
large as the load. A job with a seed, or with pictures, runs alone.

Every step, each row's new token is decoded and passed through the chat's `StopFilter`, so a row ends at
an end-of-sequence token, at a stop word (the template's or the request's; the text before it is the
answer) or at its own `max_tokens`, and a stopping criterion tells `generate` which rows are done; the
batch ends when all are. A job alone in its batch gets exactly the inputs and `generate` arguments that
`xtune chat` gives the same prompt, so a greedy answer is the same text.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from xtune.chat.stops import StopFilter
from xtune.serve.schema import Sampling

GATHER_S = 0.25  # the longest a batch waits for requests that are being prepared


class QueueFull(Exception):
    """The queue holds `max_queue` jobs already."""


@dataclass
class Job:
    """One answer to generate. `emit` receives ("text", piece), then ("done", finish_reason, n_tokens)
    or ("error", message); it is called from the worker thread."""

    ids: list[int]  # the prompt's token ids
    sampling: Sampling
    max_tokens: int
    stop_words: list[str]
    emit: Callable[[tuple], None]
    strip: bool = False  # a chat answer loses the white space around it, as `xtune chat` strips it
    inputs: dict | None = None  # a vision-language prompt's processor outputs (it runs alone)
    cancelled: threading.Event = field(default_factory=threading.Event)
    queued_at: float = field(default_factory=time.perf_counter)

    def batch_key(self):
        return None if self.inputs is not None else self.sampling.batch_key()


class _Trim:
    """Streamed text without the white space at its start and end (held back until text follows it)."""

    def __init__(self):
        self.started, self.held = False, ""

    def feed(self, piece: str) -> str:
        if not self.started:
            piece = piece.lstrip()
            if not piece:
                return ""
            self.started = True
        text = self.held + piece
        body = text.rstrip()
        self.held = text[len(body):]
        return body


class _Row:
    """One job's tokens in a batch: decoded as they come, cut at stop words, ended when done."""

    def __init__(self, job: Job, decode: Callable[[list[int]], str], eos_ids: set[int]):
        self.job, self.decode, self.eos_ids = job, decode, eos_ids
        self.tokens: list[int] = []
        self.count = 0  # tokens generated, an end-of-sequence token included
        self.decoded = ""
        self.filter = StopFilter(job.stop_words)
        self.trim = _Trim() if job.strip else None
        self.done = False

    def _send(self, piece: str) -> None:
        if self.trim is not None:
            piece = self.trim.feed(piece)
        if piece:
            self.job.emit(("text", piece))

    def _feed_decoded(self, final: bool = False) -> None:
        text = self.decode(self.tokens)
        if text.endswith("\ufffd") and not final:  # a character whose bytes are still coming
            return
        piece, self.decoded = text[len(self.decoded):], text
        self._send(self.filter.feed(piece))

    def add(self, token: int) -> None:
        if self.done:
            return
        if self.job.cancelled.is_set():
            self.done = True  # the client left: nothing more is sent
            return
        self.count += 1
        if token in self.eos_ids:
            return self.finish("stop")
        self.tokens.append(token)
        self._feed_decoded()
        if self.filter.stopped:
            return self.finish("stop")
        if self.count >= self.job.max_tokens:
            self.finish("length")

    def finish(self, reason: str) -> None:
        if self.done:
            return
        self.done = True
        if not self.filter.stopped:
            self._feed_decoded(final=True)
            self._send(self.filter.finish())
        self.job.emit(("done", "stop" if self.filter.stopped else reason, self.count))


class TransformersBackend:
    """Batched `generate` with a loaded transformers model; `session` (a `ChatSession` without history)
    renders prompts and knows the stop words and end-of-sequence ids, as in `xtune chat`."""

    name = "transformers"

    def __init__(self, model, tokenizer, session):
        self.model, self.session = model, session
        self.tokenizer = session.tokenizer  # a processor's text tokenizer
        self.processor = tokenizer if tokenizer is not self.tokenizer else None
        self.lock = threading.Lock()  # the fast tokenizer is not used from two threads at once
        config = getattr(model.config, "text_config", None) or model.config
        self.context = int(getattr(config, "max_position_embeddings", 0) or 0) or None

    @property
    def vision(self) -> bool:
        return self.processor is not None

    def encode(self, text: str, *, special: bool) -> list[int]:
        with self.lock:
            return self.tokenizer(text, add_special_tokens=special)["input_ids"]

    def vision_inputs(self, prompt: str, images: list) -> dict:
        """A vision-language prompt's inputs with its pictures (the processor expands the image tokens)."""
        with self.lock:
            return self.session.model_inputs(prompt, images=images)

    def _decode(self, tokens: list[int]) -> str:
        with self.lock:
            return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def generate(self, jobs: list[Job]) -> None:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList
        from transformers.generation.streamers import BaseStreamer

        from xtune.chat.session import GenerationSettings, seeded

        device = next(self.model.parameters()).device
        if jobs[0].inputs is not None:
            inputs = jobs[0].inputs
        else:
            with self.lock:
                inputs = self.tokenizer.pad({"input_ids": [j.ids for j in jobs]}, padding=True,
                                            return_tensors="pt")
            inputs = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
        inputs = {k: v.to(device) for k, v in inputs.items()}
        s = jobs[0].sampling
        settings = GenerationSettings(max_new_tokens=max(j.max_tokens for j in jobs),
                                      temperature=s.temperature, top_p=s.top_p, top_k=s.top_k,
                                      repetition_penalty=s.repetition_penalty, seed=s.seed)
        eos = set(self.session.eos_token_ids)
        rows = [_Row(job, self._decode, eos) for job in jobs]

        class Streamer(BaseStreamer):
            prompt_seen = False

            def put(self, value):
                if not self.prompt_seen:  # generate hands the prompt over first
                    self.prompt_seen = True
                    return
                for row, token in zip(rows, value.reshape(-1).tolist(), strict=True):
                    row.add(int(token))

            def end(self):
                pass

        class RowsDone(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.tensor([row.done for row in rows], device=input_ids.device)

        kwargs = self.session.generate_kwargs(settings)
        with torch.inference_mode(), seeded(s.seed):
            self.model.generate(**inputs, **kwargs, streamer=Streamer(),
                                stopping_criteria=StoppingCriteriaList([RowsDone()]))
        for row in rows:
            row.finish("length")


class Worker:
    """The queue and the thread that runs `backend.generate` on batches of jobs."""

    def __init__(self, backend, *, max_batch: int = 8, max_queue: int = 64):
        self.backend, self.max_batch, self.max_queue = backend, max_batch, max_queue
        self._waiting: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._arriving = 0  # requests being prepared, not yet queued
        self.batches = 0  # how many generate calls ran (the tests and the benchmark read it)
        self.largest_batch = 0
        self._thread = threading.Thread(target=self._run, name="xtune-serve-worker", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def submit(self, job: Job) -> None:
        with self._cond:
            if len(self._waiting) >= self.max_queue:
                raise QueueFull
            self._waiting.append(job)
            self._cond.notify_all()

    @contextlib.contextmanager
    def arriving(self):
        """Around a request's preparation (template, tokenizer) until its jobs are queued: a batch that is
        about to start waits for such requests (at most `GATHER_S`), so that clients which send their next
        request together, as they do when their answers came in one batch, share the next batch too."""
        with self._cond:
            self._arriving += 1
        try:
            yield
        finally:
            with self._cond:
                self._arriving -= 1
                self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=10)

    def _gather(self, batch: list[Job], key) -> None:
        """Move waiting jobs with the batch's key into it, up to `max_batch`."""
        for job in list(self._waiting):
            if len(batch) >= self.max_batch:
                return
            if job.batch_key() == key:
                self._waiting.remove(job)
                batch.append(job)

    def _take(self) -> list[Job] | None:
        with self._cond:
            while not self._waiting and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            first = self._waiting.popleft()
            batch, key = [first], first.batch_key()
            if key is None:
                return batch
            self._gather(batch, key)
            deadline = time.monotonic() + GATHER_S
            while len(batch) < self.max_batch and self._arriving and time.monotonic() < deadline:
                self._cond.wait(deadline - time.monotonic())
                self._gather(batch, key)
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            batch = [job for job in batch if not job.cancelled.is_set()]
            if not batch:
                continue
            self.batches += 1
            self.largest_batch = max(self.largest_batch, len(batch))
            try:
                self.backend.generate(batch)
            except Exception as exc:  # the requests fail; the server goes on
                message = f"generation failed: {type(exc).__name__}: {exc}"
                for job in batch:
                    job.emit(("error", message))
