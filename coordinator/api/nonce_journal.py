"""Accepted call nonces on disk, so a restarted coordinator still refuses their replay.

Without it, a call captured in the minute before a restart could be replayed just after,
while its timestamp is still fresh. One line per accepted call is appended to the current
segment and handed to the OS at once (a killed process loses none; a power cut may lose
the last ones, as it may SQLite's newest commits). When the current segment is a window
old it becomes the previous one and the older one is deleted, so the files hold at most
two windows of calls whatever the uptime.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path


class NonceJournal:
    def __init__(self, folder: Path, window_seconds: float,
                 clock: Callable[[], float] = time.time) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.current = folder / "nonces.log"
        self.previous = folder / "nonces.old"
        self.window = window_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._file = None
        self._segment_started = 0.0

    def load(self, since: float) -> list[tuple[str, float]]:
        """Nonces accepted at or after `since`; then start a fresh segment holding only them."""
        entries: list[tuple[str, float]] = []
        for path in (self.previous, self.current):
            if path.exists():
                entries.extend(_read(path, since))
        with self._lock:
            self._start_segment(entries)
        return entries

    def record(self, key: str, now: float) -> None:
        with self._lock:
            if self._file is None:
                raise RuntimeError("load() the journal before recording: it starts the segment")
            if now - self._segment_started >= self.window:
                self._rotate()
            self._file.write(f"{now:.3f} {key}\n")
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def _rotate(self) -> None:
        assert self._file is not None
        self._file.close()
        os.replace(self.current, self.previous)
        self._open()

    def _start_segment(self, live: list[tuple[str, float]]) -> None:
        if self._file is not None:
            self._file.close()
        fresh = self.current.with_suffix(".new")
        fresh.write_text("".join(f"{seen_at:.3f} {key}\n" for key, seen_at in live))
        os.replace(fresh, self.current)
        self.previous.unlink(missing_ok=True)
        self._open()

    def _open(self) -> None:
        self._file = self.current.open("a", encoding="ascii")
        self._segment_started = self._clock()


def _read(path: Path, since: float) -> list[tuple[str, float]]:
    entries = []
    for line in path.read_text(encoding="ascii", errors="replace").splitlines():
        stamp, _, key = line.partition(" ")
        try:
            seen_at = float(stamp)
        except ValueError:
            continue  # a line torn by a crash
        if key and seen_at >= since:
            entries.append((key, seen_at))
    return entries
