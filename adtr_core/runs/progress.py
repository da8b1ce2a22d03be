"""Progress bars that suit both a terminal and a log: one helper every bar of the package uses.

In a terminal a bar is tqdm's own, redrawn in place. When its output is not a terminal
(CI, ``> log 2>&1``, a notebook run by papermill) a redrawn bar would be thousands of
carriage-return updates on one line, so the bar writes whole lines instead: one when
another 10 % of the work is done or 10 seconds have passed since the last line, and a
final line when it closes. :func:`progress_bar` takes tqdm's arguments and returns a
tqdm object either way (``set_postfix``, ``update``, ``write`` work as usual).

Example:
    >>> import io
    >>> log = io.StringIO()
    >>> for _ in progress_bar(range(100), desc="features", file=log):
    ...     pass
    >>> len(log.getvalue().splitlines()) <= 11
    True

See Also:
    ``adtr_core.runs.train`` (the epoch bar), ``adtr_core.runs.features`` (the backbone bar),
    ``adtr_core.runs.peers`` (anomalib's coreset bar, routed through this helper).
"""

from __future__ import annotations

import sys
import time
from typing import Any

from tqdm.std import tqdm

LINE_EVERY_S = 10.0  # at most one line per this many seconds of work ...
LINE_EVERY_FRACTION = 0.1  # ... or per this share of the total, whichever comes first


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is an interactive terminal (False when it cannot say)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


class LogProgress(tqdm):
    """A tqdm bar that writes throttled whole lines (for output that is not a terminal).

    A line is written when ``LINE_EVERY_FRACTION`` of ``total`` has been done since the
    last one, or ``LINE_EVERY_S`` seconds have passed (without a total: time only), and
    once more on closing unless the last line already showed the final count. Refreshes
    asked for by tqdm itself (``set_postfix``, ``tqdm.write``, its monitor) follow the
    same rule.
    """

    clock = staticmethod(time.monotonic)
    monitor_interval = 0  # no monitor thread: this class throttles itself

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._ready = False
        kwargs.setdefault("ascii", True)  # '#' blocks: plain text in any log viewer
        super().__init__(*args, **kwargs)
        # update() and __iter__ hand every step to update(), which decides alone
        self.miniters, self.mininterval, self.dynamic_miniters = 1, 0, False
        self._line_n, self._line_t, self._lines = self.n, self.clock(), 0
        self._ready = True

    def _due(self) -> bool:
        if self.total:
            if self.n - self._line_n >= self.total * LINE_EVERY_FRACTION:
                return True
        return self.n != self._line_n and self.clock() - self._line_t >= LINE_EVERY_S

    def _line(self) -> None:
        self.fp.write(self.__str__() + "\n")
        self.fp.flush()
        self._line_n, self._line_t, self._lines = self.n, self.clock(), self._lines + 1

    def update(self, n: float | None = 1) -> bool | None:
        if self.disable:
            return None
        if n:
            self.n += n
        self.last_print_n = self.n  # tqdm's own bookkeeping (rates, __iter__'s counter)
        self.last_print_t = self._time()
        if self._ready and self._due():
            self._line()
            return True
        return None

    def refresh(self, nolock: bool = False, lock_args: Any = None) -> bool:
        if not self.disable and self._ready and self._due():
            self._line()
        return True

    def clear(self, nolock: bool = False) -> None:
        """Nothing to clear: written lines stay."""

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        return True  # lines are written by _line alone, never redrawn

    def close(self) -> None:
        if self.disable:
            return
        final = self._ready and (self._lines == 0 or self.n != self._line_n)
        if final:
            self._line()
        self.sp = None  # tqdm's close then only unregisters the bar: no redraw, no '\n'
        super().close()


def progress_bar(*args: Any, **kwargs: Any) -> tqdm:
    """A tqdm progress bar (same arguments) that writes throttled lines when not in a terminal.

    Args:
        *args: tqdm's positional arguments (``iterable``, ``desc``, ``total``, ...).
        **kwargs: tqdm's keyword arguments; ``file`` defaults to ``sys.stderr``.

    Returns:
        tqdm's own bar when ``file`` is a terminal, else a :class:`LogProgress`.
    """
    stream = kwargs.get("file") if kwargs.get("file") is not None else sys.stderr
    if is_terminal(stream):
        return tqdm(*args, **kwargs)
    return LogProgress(*args, **kwargs)
