"""The `frameproof` entry point: Ctrl-C, even while the program is still loading, ends it
quietly (frameproof/cli/interrupt.py)."""

from __future__ import annotations

import sys

from frameproof.cli import interrupt


def main() -> int:
    interrupt.install()
    try:
        from frameproof.cli.main import main as real_main
    except KeyboardInterrupt:
        sys.stderr.write("frameproof: interrupted before anything was sent\n")
        return interrupt.INTERRUPTED
    return real_main()
