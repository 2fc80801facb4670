"""Progress for terminals and for log files alike.

Why not plain tqdm everywhere: a batch job's stderr is a file, where tqdm's ``\\r`` redraws pile up
as one endless line that neither ``tail`` nor ``less`` shows usefully. On a terminal the bar is kept;
elsewhere :class:`LineProgress` prints a whole line every ``MOPEFT_PROGRESS_SECONDS`` (default 30)
and one at the end: the time, step/total, rate and ETA, so a SLURM log says how far a job got.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

DEFAULT_SECONDS = 30.0
ENV_SECONDS = "MOPEFT_PROGRESS_SECONDS"


def interval_seconds() -> float:
    """Seconds between two log lines: ``$MOPEFT_PROGRESS_SECONDS``, else 30 (a bad value is an
    error, not silently the default, so a typo in a job script shows)."""
    raw = os.environ.get(ENV_SECONDS, "").strip()
    if not raw:
        return DEFAULT_SECONDS
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{ENV_SECONDS}={raw!r} is not a number of seconds") from None
    if value < 0:
        raise ValueError(f"{ENV_SECONDS}={raw!r} must not be negative")
    return value


def _is_tty(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress(
    iterable: Iterable[Any] | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    initial: int = 0,
    mininterval: float = 2.0,
    stream: IO[str] | None = None,
    interval: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Any:
    """A tqdm bar on a terminal, else a :class:`LineProgress`; both offer iteration, ``update``,
    ``set_postfix``, ``close`` and ``with``. ``unit="B"`` shows bytes as KiB/MiB/GiB.
    ``mininterval`` is tqdm's redraw pause; ``interval`` (default :func:`interval_seconds`) the
    pause between log lines; ``clock`` is there for tests."""
    stream = sys.stderr if stream is None else stream
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    if _is_tty(stream):
        from tqdm import tqdm

        scale = {"unit_scale": True, "unit_divisor": 1024} if unit == "B" else {}
        return tqdm(
            iterable, total=total, desc=desc, unit=unit, initial=initial, mininterval=mininterval,
            file=stream, **scale,
        )  # fmt: skip
    every = interval_seconds() if interval is None else interval
    return LineProgress(iterable, total, desc, unit, initial, stream, every, clock)


def _size(n: float) -> str:
    prefix = ""
    for bigger in ("Ki", "Mi", "Gi", "Ti"):
        if abs(n) < 1024:
            break
        n, prefix = n / 1024, bigger
    return f"{n:.1f} {prefix}B" if prefix else f"{n:.0f} B"


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class LineProgress:
    """Whole-line progress for a non-terminal stream (the tqdm calls the package makes).

    A line is written when ``interval`` seconds have passed since the last one (checked on
    ``update``) and once on ``close`` (unless the last line already showed the final count)."""

    def __init__(
        self,
        iterable: Iterable[Any] | None,
        total: int | None,
        desc: str,
        unit: str,
        initial: int,
        stream: IO[str],
        interval: float,
        clock: Callable[[], float],
    ) -> None:
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n = self.start_n = initial
        self.stream, self.interval, self.clock = stream, interval, clock
        self.postfix: dict[str, Any] = {}
        self.started = self.last = clock()
        self.printed_n: int | None = None
        self.closed = False

    def __iter__(self) -> Iterator[Any]:
        assert self.iterable is not None, "progress(total=...) has no iterable to walk"
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int | float = 1) -> None:
        self.n += n
        now = self.clock()
        if now - self.last >= self.interval:
            self._write(now)

    def set_postfix(
        self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True, **kwargs: Any
    ) -> None:
        """As tqdm's: the values are shown at the end of the next line (``refresh`` is ignored)."""
        self.postfix.update(ordered_dict or {}, **kwargs)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.printed_n != self.n:
            self._write(self.clock())

    def line(self, now: float) -> str:
        """The line for the state at ``now``, without the time stamp."""
        fmt = _size if self.unit == "B" else (lambda v: f"{v:g}")
        done = fmt(self.n) + (f"/{fmt(self.total)}" if self.total is not None else "")
        if self.unit != "B":
            done += f" {self.unit}"
        if self.total:
            done += f" ({100 * self.n / self.total:.0f}%)"
        elapsed = now - self.started
        rate = (self.n - self.start_n) / elapsed if elapsed > 0 else None
        parts = [f"{self.desc}: {done}" if self.desc else done]
        if rate is None:
            parts.append(f"? {self.unit}/s")
        else:
            parts.append(f"{_size(rate)}/s" if self.unit == "B" else f"{rate:.3g} {self.unit}/s")
        parts.append(f"elapsed {_duration(elapsed)}")
        if self.total is not None and rate:
            parts.append(f"ETA {_duration(max(self.total - self.n, 0) / rate)}")
        elif self.total is not None:
            parts.append("ETA ?")
        if self.postfix:
            parts.append(" ".join(f"{k}={v}" for k, v in self.postfix.items()))
        return re.sub(r"[\r\n]+", " ", ", ".join(parts))

    def _write(self, now: float) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        self.stream.write(f"{stamp} {self.line(now)}\n")
        self.stream.flush()
        self.last, self.printed_n = now, self.n
