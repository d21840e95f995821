"""Progress lines for long CLI runs: on a terminal only, silent when piped."""
from __future__ import annotations

import sys
import time


class Progress:
    """``with Progress("bench", total=12) as p: p.step("1 GiB PMD")``.

    Draws one self-rewriting line on stderr when stderr is a terminal (or
    ``force=True``); otherwise does nothing, so piped output stays clean.
    """

    def __init__(self, label: str, total: int = 0, force: bool = False, stream=None):
        self.label = label
        self.total = total
        self.done = 0
        self.stream = stream or sys.stderr
        self.enabled = force or getattr(self.stream, "isatty", lambda: False)()
        self.start = time.monotonic()

    def step(self, what: str = "", advance: int = 1) -> None:
        self.done += advance
        self.show(what)

    def show(self, what: str = "") -> None:
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.start
        if self.total:
            width = 24
            filled = int(width * min(self.done, self.total) / self.total)
            bar = "#" * filled + "." * (width - filled)
            line = f"{self.label} [{bar}] {self.done}/{self.total} {elapsed:5.1f}s {what}"
        else:
            line = f"{self.label} {self.done} {elapsed:5.1f}s {what}"
        self.stream.write("\r" + line[:110].ljust(110))
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r" + " " * 110 + "\r")
            self.stream.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
