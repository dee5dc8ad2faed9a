"""Blocking network work off Blender's UI thread.

A call runs in a daemon thread; its result (or exception) waits in a queue until `pump()`,
called from the add-on's bpy.app.timers timer on the UI thread, hands it to the callback.
Only the callback may touch bpy data: Blender's data is not thread-safe. No bpy here.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

Done = Callable[[Any, BaseException | None], None]

_results: queue.Queue[tuple[str, Done, Any, BaseException | None]] = queue.Queue()
_running: set[str] = set()
_lock = threading.Lock()


def start(key: str, work: Callable[[], Any], done: Done) -> bool:
    """Run work() in a thread unless a call with this key still runs; False if one does.

    done(result, error) is called on the UI thread by pump().
    """
    with _lock:
        if key in _running:
            return False
        _running.add(key)

    def run() -> None:
        try:
            result, error = work(), None
        except BaseException as exc:  # handed to the UI thread, never lost in the thread
            result, error = None, exc
        _results.put((key, done, result, error))

    threading.Thread(target=run, name=f"frameproof-{key}", daemon=True).start()
    return True


def busy(key: str) -> bool:
    with _lock:
        return key in _running


def pump() -> bool:
    """Deliver finished calls to their callbacks; True while calls are still out."""
    while True:
        try:
            key, done, result, error = _results.get_nowait()
        except queue.Empty:
            break
        try:
            done(result, error)
        finally:
            # The key is freed only after the callback ran, so a poll never overlaps itself.
            with _lock:
                _running.discard(key)
    with _lock:
        return bool(_running) or not _results.empty()

