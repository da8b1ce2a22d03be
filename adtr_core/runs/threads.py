"""The number of torch CPU threads: a rule that stays fast on an idle and on a busy machine.

torch uses one thread per core by default, and OpenMP's threads spin while they wait for
each other. On a machine that other CPU-bound processes share, that is the slow choice: a
thread that lost its core holds up every other thread at each parallel region, and the
spinning ones take cores from the competitors. The rule here:

- **threads** = the cores that are free, ``round(cores - busy)``, at least 1, where
  ``busy`` is the number of cores the rest of the machine kept busy over the last
  interval (``/proc/stat`` minus this process's own CPU time). On an idle machine that is
  every core; beside one CPU-bound process on two cores it is one thread.
- The rule is re-applied between epochs (:class:`ThreadRule`), so a competitor that
  starts or stops during a run changes the thread count at the next epoch.
- **OpenMP's wait policy stays its default** (spin for a while, then sleep). Measured on
  2 cores (quick-profile epoch on bottle, ``benchmarks/threads.py``): passive waiting
  (``OMP_WAIT_POLICY=PASSIVE``) made an idle epoch with 2 threads 1.6x slower (13.8 s
  against 8.5 s), while the thread count alone already avoids the spinning under load
  (1 thread beside a competitor: 12.0 s; 2 threads: 30.9 s).

An explicit choice wins: ``threads=N`` (``--threads N`` on the command line, a notebook's
``threads`` parameter) or the environment variable ``ADTR_THREADS=N``; then the count is
fixed for the whole run.

**A trained run takes a fixed count by default** (:func:`run_threads`): its numbers depend
a little on the thread count (a summation order changes, and training amplifies it: a demo
texture's image AUROC moved by 0.8 points between 1 and 2 threads, a small category's by 1.1
between an idle machine and one with another job beside it). So a trained run's config
holds its count (``threads``: ``ADTR_THREADS``, else every core this process may use), it is
part of the results folder's name, and the same command on the same machine gives the same
numbers whatever runs beside it; ``threads="auto"`` (``--threads auto``) asks for the rule,
for speed on a shared machine, at the price of that. Work whose result does not depend on
the count, fitting PaDiM or PatchCore (scores equal to 1e-9 with 1 and 2 threads), takes the
rule (:func:`fit_threads`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

ENV_THREADS = "ADTR_THREADS"
_RULE = ("", "auto", "0")  # values that mean "use the rule"


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _cpu_times() -> tuple[float, float] | None:
    """(busy, total) jiffies of all cores from ``/proc/stat``, or None where it is missing."""
    try:
        with open("/proc/stat") as fh:
            fields = [float(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal
    return total - idle, total


def _own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


class LoadMeter:
    """Cores kept busy by other processes since the previous reading."""

    def __init__(self) -> None:
        self._last = self._read()

    @staticmethod
    def _read() -> tuple[tuple[float, float] | None, float, float]:
        return _cpu_times(), _own_cpu_s(), time.monotonic()

    def busy_cores(self) -> float | None:
        """Cores busy with other work since the last call (or creation); None if unknown."""
        now = self._read()
        (before, own0, t0), (after, own1, t1) = self._last, now
        self._last = now
        if before is None or after is None or after[1] <= before[1] or t1 <= t0:
            return None
        n_cpu = os.cpu_count() or 1
        busy_all = (after[0] - before[0]) / (after[1] - before[1]) * n_cpu  # cores, everyone
        own = (own1 - own0) / (t1 - t0)  # cores used by this process
        return max(0.0, busy_all - own)


def free_threads(busy: float | None, n_cores: int | None = None) -> int:
    """The rule: one thread per core the others leave free, at least 1."""
    n_cores = n_cores or cores()
    if busy is None:
        return n_cores
    return max(1, min(n_cores, round(n_cores - busy)))


def explicit_threads(threads: int | str | None = None) -> int | None:
    """An explicit choice: ``threads`` if given, else ``ADTR_THREADS``; None means the rule.

    ``0``, ``"auto"`` and an empty value also mean the rule.

    Raises:
        ValueError: a value that is not a non-negative integer or "auto".
    """
    for value, where in ((threads, "threads"), (os.environ.get(ENV_THREADS), ENV_THREADS)):
        if value is None or str(value).strip().lower() in _RULE:
            continue
        try:
            n = int(value)
        except (TypeError, ValueError):
            n = -1
        if n < 0:
            raise ValueError(f"{where} must be a number of threads or 'auto'; got {value!r}")
        return n
    return None


def run_threads(threads: int | str | None = None, default: int | None = None) -> int | str:
    """The thread count a trained run is identified by (its config's ``threads``).

    Args:
        threads: a count (kept), "auto" or 0 (the rule: "auto"), or None: ``ADTR_THREADS``,
            else ``default``, else every core this process may use.
        default: the count when neither is given (a Ray task of one CPU: 1).

    Raises:
        ValueError: a value that is not a non-negative integer or "auto".
    """
    for value in (threads, os.environ.get(ENV_THREADS)):
        if value is None:
            continue
        if str(value).strip().lower() in _RULE:
            return "auto"
        return explicit_threads(value)
    return default or cores()


def sample_busy_cores(interval_s: float = 0.25) -> float | None:
    """Cores busy with other work over the next ``interval_s`` seconds."""
    meter = LoadMeter()
    time.sleep(interval_s)
    return meter.busy_cores()


@dataclass
class ThreadRule:
    """Sets torch's thread count now and, when automatic, again at every :meth:`update`.

    Attributes:
        threads: an explicit count (fixed); "auto" for the rule; None (or 0) for
            ``ADTR_THREADS``, else the rule.
        interval_s: how long :meth:`apply` samples the machine's load before the first choice.
    """

    threads: int | str | None = None
    interval_s: float = 0.25

    def __post_init__(self) -> None:
        rule = str(self.threads).strip().lower() == "auto"
        self.fixed = None if rule else explicit_threads(self.threads)
        self._meter: LoadMeter | None = None
        self.chosen: int | None = None

    def apply(self) -> int:
        """Choose and set the thread count; returns it."""
        import torch

        if self.fixed is not None:
            n = self.fixed
        else:
            n = free_threads(sample_busy_cores(self.interval_s))
            self._meter = LoadMeter()
        if n != torch.get_num_threads():
            torch.set_num_threads(n)
        self.chosen = n
        return n

    def update(self) -> int:
        """Re-apply the rule from the load since the last call (a fixed count stays)."""
        if self.chosen is None:
            return self.apply()
        if self.fixed is not None or self._meter is None:
            return self.chosen
        import torch

        n = free_threads(self._meter.busy_cores())
        if n != torch.get_num_threads():
            torch.set_num_threads(n)
        self.chosen = n
        return n


def set_default_threads(threads: int | str | None) -> int | None:
    """The thread count of every later run in this process and its workers (``ADTR_THREADS``).

    A notebook's ``threads`` parameter goes here: a number fixes the count of every run
    (``run_experiment``, ``run_sweep``, Ray workers), None or "auto" restores the rule.

    Returns:
        the fixed count, or None for the rule.
    """
    if threads is None or str(threads).strip().lower() in _RULE:
        os.environ.pop(ENV_THREADS, None)
        return None
    n = explicit_threads(threads)  # validated: a number of threads
    os.environ[ENV_THREADS] = str(n)
    return n


def apply_threads(threads: int | str | None = None) -> int:
    """Set torch's threads by the rule (or to the explicit ``threads`` / ``ADTR_THREADS``)."""
    return ThreadRule(threads).apply()


@contextmanager
def fit_threads(threads: int | str | None = None) -> Iterator[int]:
    """Threads for work whose result does not depend on their count: the rule, even under a
    fixed ``ADTR_THREADS`` (an explicit ``threads`` wins); torch's count is restored after.

    Yields:
        the thread count in use.
    """
    import torch

    before = torch.get_num_threads()
    rule = threads is None or str(threads).strip().lower() in _RULE  # never ADTR_THREADS
    fixed = None if rule else explicit_threads(threads)
    n = fixed if fixed else free_threads(sample_busy_cores())
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)
