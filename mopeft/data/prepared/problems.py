"""Every problem of one dataset in one error, instead of one per run.

Why: a folder of a few hundred hand-made masks often has several kinds of mistakes at once (an
unpaired file, a stray value, a resized mask). Reporting only the first turns fixing them into one
preparation run per mistake; collecting them shows all of them at once. The list is capped so that
a systematic mistake (every mask 0/255) does not print thousands of lines.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from mopeft.data.errors import PrepareError

MAX_PROBLEMS = 20  # listed in full; beyond this only their number is given


class Problems:
    """Collects one-line problem messages of one dataset (``where`` names it) and raises them as
    one :class:`PrepareError`: a single problem as its own message, several numbered on one line."""

    def __init__(self, where: str, limit: int = MAX_PROBLEMS) -> None:
        self.where = where
        self.limit = limit
        self.messages: list[str] = []
        self.count = 0

    def __bool__(self) -> bool:
        return self.count > 0

    def add(self, message: str) -> None:
        self.count += 1
        if len(self.messages) < self.limit:
            self.messages.append(message)

    @contextlib.contextmanager
    def collect(self) -> Iterator[None]:
        """Record a :class:`PrepareError` raised in the block and carry on after it."""
        try:
            yield
        except PrepareError as exc:
            self.add(str(exc))

    def message(self) -> str:
        if self.count == 1:
            return self.messages[0]
        listed = "; ".join(f"({i}) {m}" for i, m in enumerate(self.messages, 1))
        more = f"; ... and {self.count - len(self.messages)} more" if self.count > len(self.messages) else ""
        return f"{self.where}: {self.count} problems: {listed}{more}"

    def raise_if_any(self) -> None:
        if self.count:
            raise PrepareError(self.message())
