"""Peak resident memory of another process over one stretch of work.

Linux keeps the high-water mark of a process's RSS (``VmHWM``) and resets it when "5" is written to
``/proc/PID/clear_refs``: exact, with no sampling. Where that is refused, a thread samples the RSS
every 5 ms instead.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

__all__ = ["Memory", "PeakRss"]

_SAMPLE_SECONDS = 0.005


class Memory:
    def __init__(self, base_mb: float) -> None:
        self.base_mb = base_mb
        self.peak_mb = base_mb


def _status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise LookupError(field)


class PeakRss:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.method = "VmHWM after a reset through /proc/PID/clear_refs"
        try:
            self._reset()
            _status_mb(pid, "VmHWM")
        except (OSError, LookupError):
            self.method = f"RSS sampled every {_SAMPLE_SECONDS * 1000:.0f} ms"

    def _reset(self) -> None:
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")

    def _rss_mb(self) -> float:
        return _status_mb(self.pid, "VmRSS")

    @contextlib.contextmanager
    def measure(self) -> Iterator[Memory]:
        memory = Memory(self._rss_mb())
        if self.method.startswith("VmHWM"):
            self._reset()
            yield memory
            memory.peak_mb = max(memory.base_mb, _status_mb(self.pid, "VmHWM"))
            return
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(_SAMPLE_SECONDS):
                memory.peak_mb = max(memory.peak_mb, self._rss_mb())

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield memory
        finally:
            stop.set()
            thread.join()
            memory.peak_mb = max(memory.peak_mb, self._rss_mb())
