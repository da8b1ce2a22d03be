"""Timing, peak memory and host description shared by every benchmark section.

Timing: :func:`interleaved` runs a few callables round-robin (A B C, A B C, ...) after a
warm-up, synchronising the GPU around each call, and keeps every round's time; sections
report medians, and ratios are medians of the per-round ratios. Interleaving matters on a
shared machine: a burst of load then slows every variant of that round, not one of them.

Peak memory (:class:`PeakMemory`):

- CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (weights,
  inputs and activations on the device);
- CPU: the process's peak resident set (``VmHWM``), reset through ``/proc/self/clear_refs``
  before the run, minus the resident set before it: the working memory of the run (weights
  already resident are added by the caller). Where ``clear_refs`` is not writable a thread
  samples the RSS with psutil every 2 ms instead. Freed heap memory is handed back to the
  system (``malloc_trim``) before each measurement so that earlier runs do not hide it.
"""

from __future__ import annotations

import ctypes
import gc
import os
import platform
import re
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

MIB = 1 << 20


@dataclass
class Plan:
    """Sizes and repetitions of one benchmark run.

    ``Plan.full()`` is ``make bench``; ``Plan.quick()`` (``--quick``) measures the same things
    with fewer rounds and a shorter training run; ``Plan.tiny()`` (``--tiny``, for the smoke
    test) shrinks every size so that the whole run takes seconds (its figures mean nothing).
    """

    name: str = "full"
    image_size: int = 256
    backbones: tuple[str, ...] = ("tf_efficientnet_lite0", "efficientnet_b4")
    batches: tuple[int, ...] = (1, 16)
    rounds: int = 3  # timed rounds per comparison (after one warm-up round)
    adtr: dict[str, Any] = field(default_factory=dict)  # ADTRConfig overrides (paper sizes: {})
    peer_batch: int = 16
    peer_channels: int = 720  # C of the peer comparison (EfficientNet-B4 stages 1-5)
    train_rounds: int = 2  # timed epochs per variant (cached / recomputed features)
    train_images: int | None = None  # cap on training images per epoch (None: the whole split)
    metric_epochs: int | None = None  # cap on the quick-profile run's epochs (None: as profiled)
    metric_overrides: dict[str, Any] = field(default_factory=dict)  # ExperimentConfig fields
    compile: bool = False  # also measure torch.compile (slow to compile on a small CPU)
    peak_size: int = 2048  # n of the n x n torch.mm peak probe (benchmarks.speed)

    @classmethod
    def full(cls) -> Plan:
        return cls()

    @classmethod
    def quick(cls) -> Plan:
        return cls(name="quick", rounds=2, train_rounds=1, train_images=32, metric_epochs=4)

    @classmethod
    def tiny(cls) -> Plan:
        small = dict(hidden_dim=32, num_encoder_layers=1, num_decoder_layers=1, num_heads=2)
        small["dim_feedforward"] = 64
        return cls(
            name="tiny",
            image_size=64,
            backbones=("tf_efficientnet_lite0",),
            batches=(1, 2),
            rounds=1,
            adtr=small,
            peer_batch=2,
            peer_channels=32,
            peak_size=256,
            train_rounds=1,
            train_images=4,
            metric_epochs=2,
            metric_overrides=dict(image_size=64, batch_size=2, **small),
        )


# --------------------------------------------------------------------------- host


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``, else ``platform.processor()``)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        match = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
        if match:
            return match.group(1).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    match = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
    return set(match.group(1).split()) if match else set()


def host_info(device: torch.device) -> dict[str, Any]:
    """What the figures were measured on; ``kind`` names the results files."""
    flags = cpu_flags()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": cores,
        "torch_threads": torch.get_num_threads(),
        "cpu_bf16": bool(flags & {"avx512_bf16", "amx_bf16"}),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "device": str(device),
        "load_avg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["kind"] = "cuda-" + _slug(info["gpu"])
    else:
        info["kind"] = f"cpu-{_slug(info['cpu'])}-{cores}c"
    return info


def _slug(text: str) -> str:
    text = re.sub(r"\(r\)|\(tm\)|cpu|processor|@.*$", "", text.lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")[:40] or "unknown"


# --------------------------------------------------------------------------- timing


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(
    fns: dict[str, Callable[[], Any]],
    rounds: int,
    device: torch.device,
    warmup: int = 1,
) -> dict[str, list[float]]:
    """Seconds per call of each callable, ``rounds`` values each, measured round-robin.

    Args:
        fns: name -> zero-argument callable (one unit of work: a batch, an epoch...).
        rounds: timed rounds; each round calls every callable once, in order.
        device: synchronised before and after every call (CUDA).
        warmup: untimed rounds first (allocations, kernel selection, lazy caches).
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(max(1, rounds)):
        for name, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def ratio(slow: list[float], fast: list[float]) -> dict[str, float]:
    """``slow / fast`` as the median of per-round ratios, with their min and max (the spread)."""
    per_round = [s / f for s, f in zip(slow, fast) if f > 0]
    return {
        "median": float(statistics.median(per_round)),
        "min": min(per_round),
        "max": max(per_round),
    }


# --------------------------------------------------------------------------- memory


def _status_kib(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return _status_kib("VmHWM") is not None
    except OSError:
        return False


def release_memory() -> None:
    """Collect garbage and return freed heap pages to the system (glibc), where possible."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak memory of the code inside ``with`` (see the module docstring); ``.peak_bytes``."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_bytes = 0
        self.method = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        release_memory()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.method = "cuda max_memory_allocated"
        elif _reset_hwm():
            self._base = _status_kib("VmRSS") * 1024
            self.method = "peak RSS (VmHWM) over the RSS before"
        else:
            import psutil

            proc = psutil.Process()
            self._base = self._sampled = proc.memory_info().rss
            self.method = "sampled RSS (psutil, 2 ms) over the RSS before"

            def sample() -> None:
                while not self._stop.wait(0.002):
                    self._sampled = max(self._sampled, proc.memory_info().rss)

            self._thread = threading.Thread(target=sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = int(torch.cuda.max_memory_allocated(self.device))
        elif self._thread is None:
            self.peak_bytes = max(0, _status_kib("VmHWM") * 1024 - self._base)
        else:
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(0, self._sampled - self._base)


def tensor_bytes(*modules: torch.nn.Module) -> int:
    """Bytes of the parameters and buffers of ``modules`` (the resident weights)."""
    total = 0
    for module in modules:
        for t in [*module.parameters(), *module.buffers()]:
            total += t.numel() * t.element_size()
    return total
