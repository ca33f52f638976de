"""Progress for long commands: a bar on a terminal, a few plain lines in a log.

On an interactive terminal (stderr is a TTY) this is a tqdm bar. Anywhere else (a cluster
job, CI, `cxraug ... > log 2>&1`) a bar would write thousands of carriage-return updates,
so it writes one plain line every `every_s` seconds or `every_pct` percent, whichever comes
first, with the rate and the ETA, and a last line when it closes:

    finetune: 500/1000 (50%), 12.3 it/s, ETA 0:00:41, loss=0.1234

Usage is tqdm's: `for x in progress(items, desc=...)`, or `bar = progress(total=...)` then
`bar.update(n)`, `bar.set_postfix(loss=...)`, `bar.close()` (or a `with` block).

Messages (what a stage did, what it wrote) follow one convention: a library function takes
an optional `log` callable and sends each line to `say_to(log)`: the caller's callable, or
else the standard `logging` logger `cxraug`. The CLI shows that logger as plain lines on
stdout (`show_messages`); a script or notebook does the same, or configures logging.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

LOGGER = logging.getLogger("cxraug")
DEFAULT_EVERY_S = 30.0
DEFAULT_EVERY_PCT = 10.0


def say_to(log: Callable[[str], None] | None = None) -> Callable[[str], None]:
    """Where a library function's messages go: `log` when the caller gives one, else the
    `cxraug` logger (standard logging, level INFO)."""
    return log or LOGGER.info


class _PlainLines(logging.Handler):
    """Each message as a plain line on the current stdout (looked up at every message, so a
    redirected or captured stdout receives it)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), flush=True)


def show_messages(level: int = logging.INFO) -> None:
    """Print the `cxraug` logger's messages as plain lines on stdout (idempotent)."""
    if not any(isinstance(h, _PlainLines) for h in LOGGER.handlers):
        LOGGER.addHandler(_PlainLines())
    LOGGER.setLevel(level)
    LOGGER.propagate = False


def is_terminal(stream: IO[str] | None = None) -> bool:
    """Whether `stream` (default: stderr) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


class Progress:
    """Progress of one loop; see the module docstring. Disabled, it does nothing."""

    def __init__(
        self,
        iterable: Iterable | None = None,
        total: int | None = None,
        desc: str = "",
        unit: str = "it",
        initial: int = 0,
        disable: bool = False,
        every_s: float = DEFAULT_EVERY_S,
        every_pct: float = DEFAULT_EVERY_PCT,
        stream: IO[str] | None = None,
        leave: bool = True,
    ) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable = iterable
        self.total = total
        self.desc = desc
        self.unit = unit
        self.n = initial
        self.disable = disable
        self.every_s = every_s
        self.every_pct = every_pct
        self.stream = sys.stderr if stream is None else stream
        self.postfix: dict[str, Any] = {}
        self._bar = None
        self._closed = False
        self._start = time.monotonic()
        self._start_n = initial
        self._last_time = self._start
        self._last_pct = -1.0 if total else 0.0
        if not disable and is_terminal(self.stream):
            from tqdm import tqdm

            self._bar = tqdm(
                total=total,
                initial=initial,
                desc=desc,
                unit=unit,
                file=self.stream,
                dynamic_ncols=True,
                leave=leave,
            )

    # ---- tqdm-like API
    def update(self, n: int = 1) -> None:
        if self.disable:
            return
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        due = now - self._last_time >= self.every_s
        if self.total:
            pct = 100.0 * self.n / self.total
            step = int(pct // self.every_pct) if self.every_pct > 0 else 0
            if self.every_pct > 0 and step > int(self._last_pct // self.every_pct):
                due = True
            if due:
                self._last_pct = pct
        if due and not (self.total and self.n >= self.total):  # the end is written by close
            self._write(now)

    def set_postfix(self, **values: Any) -> None:
        if self.disable:
            return
        self.postfix = values
        if self._bar is not None:
            self._bar.set_postfix(values, refresh=False)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.disable:
            return
        if self._bar is not None:
            self._bar.close()
        elif self.n > self._start_n:
            self._write(time.monotonic(), final=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("progress(): no iterable given")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    # ---- plain lines
    def line(self, now: float | None = None) -> str:
        """The plain status line: count, share, rate, ETA (or elapsed at the end), postfix."""
        now = time.monotonic() if now is None else now
        elapsed = max(now - self._start, 1e-9)
        rate = (self.n - self._start_n) / elapsed
        head = f"{self.desc}: " if self.desc else ""
        if self.total:
            text = f"{head}{self.n}/{self.total} ({100.0 * self.n / self.total:.0f}%)"
        else:
            text = f"{head}{self.n} {self.unit}"
        text += f", {rate:.3g} {self.unit}/s"
        if self.total and self.n < self.total and rate > 0:
            text += f", ETA {_clock((self.total - self.n) / rate)}"
        else:
            text += f", elapsed {_clock(elapsed)}"
        if self.postfix:
            text += ", " + ", ".join(f"{k}={v}" for k, v in self.postfix.items())
        return text

    def _write(self, now: float, final: bool = False) -> None:
        self._last_time = now
        self.stream.write(self.line(now) + "\n")
        self.stream.flush()


# Libraries whose own tqdm bars flood a log: module -> its switch (called only if imported).
_LIBRARY_SWITCHES = (
    ("huggingface_hub.utils", "disable_progress_bars"),
    ("transformers.utils.logging", "disable_progress_bar"),
    ("diffusers.utils.logging", "disable_progress_bar"),
    ("datasets.utils.logging", "disable_progress_bar"),
)


def quiet_library_bars(stream: IO[str] | None = None) -> None:
    """Off a terminal, turn off the progress bars of the Hugging Face libraries ("Loading
    pipeline components", "Writing model shards", ...): those already imported through
    their switches (never importing one here), those imported later through
    `HF_HUB_DISABLE_PROGRESS_BARS`. On a terminal, nothing changes."""
    if is_terminal(stream):
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for module_name, switch in _LIBRARY_SWITCHES:
        module = sys.modules.get(module_name)
        if module is not None and hasattr(module, switch):
            getattr(module, switch)()


def progress(iterable: Iterable | None = None, **options: Any) -> Progress:
    """A `Progress` over `iterable` (or, with `total=`, one updated by hand)."""
    return Progress(iterable, **options)


__all__ = ["Progress", "is_terminal", "progress", "quiet_library_bars"]
