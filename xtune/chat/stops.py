"""Stop words on streamed text: print as soon as possible, but never a stop word or text after it.

A stop word may arrive split over several streamed chunks ("<|im" then "_end|>"), so the tail of the
text that could still be the start of a stop word is held back until the next chunk decides it.
"""

from __future__ import annotations

from xtune.templates.stops import cut_at_stop

__all__ = ["StopFilter", "cut_at_stop"]


class StopFilter:
    """Feed streamed chunks; get back the text that is safe to print. `stopped` turns True at a stop word."""

    def __init__(self, stop_words):
        self.stop_words = [w for w in stop_words if w]
        self._pending = ""
        self.text = ""  # everything released so far (the answer)
        self.stopped = False

    def _held_back(self, text: str) -> int:
        """Length of the longest suffix of `text` that is a proper prefix of a stop word."""
        longest = 0
        for word in self.stop_words:
            for n in range(min(len(word) - 1, len(text)), longest, -1):
                if text.endswith(word[:n]):
                    longest = n
                    break
        return longest

    def feed(self, chunk: str) -> str:
        if self.stopped:
            return ""
        text = self._pending + chunk
        cut, found = cut_at_stop(text, self.stop_words)
        if found:
            self.stopped, self._pending = True, ""
            self.text += cut
            return cut
        hold = self._held_back(text)
        release, self._pending = text[: len(text) - hold], text[len(text) - hold:]
        self.text += release
        return release

    def finish(self) -> str:
        """The held-back tail once the stream has ended (it was not a stop word after all)."""
        rest, self._pending = ("" if self.stopped else self._pending), ""
        self.text += rest
        return rest
