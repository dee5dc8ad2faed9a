"""Ctrl-C always ends `frameproof`, quietly and promptly.

The first Ctrl-C raises KeyboardInterrupt as usual, and the command's handler says what state
things are in. If the program has not ended a few seconds later (the interrupt landed where a
library swallows it: inside gRPC's C core, a channel's shutdown, an import), a watchdog ends
the process with the same status and line, so a user never has to press Ctrl-C twice; a
second Ctrl-C ends it at once.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType

GRACE_SECONDS = 5.0
INTERRUPTED = 130
_said = threading.Event()
_message = ["interrupted"]


def install() -> None:
    """Handle SIGINT as described above (the entry point calls this first)."""
    signal.signal(signal.SIGINT, _on_sigint)


def interrupted_message(message: str) -> None:
    """What the watchdog says if it has to end the program (set once the command is known)."""
    _message[0] = message


def said_interrupted() -> None:
    """The command's own handler has printed its line: the watchdog will not repeat it."""
    _said.set()


def _force_exit() -> None:
    if not _said.is_set():
        sys.stderr.write(f"frameproof: {_message[0]}\n")
    sys.stderr.flush()
    os._exit(INTERRUPTED)


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    watchdog = threading.Timer(GRACE_SECONDS, _force_exit)
    watchdog.daemon = True
    watchdog.start()
    signal.signal(signal.SIGINT, lambda *_: _force_exit())
    raise KeyboardInterrupt
