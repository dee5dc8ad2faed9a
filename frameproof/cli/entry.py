"""The `frameproof` entry point: Ctrl-C while the program is still loading ends quietly."""

from __future__ import annotations

import sys


def main() -> int:
    try:
        from frameproof.cli.main import main as real_main
    except KeyboardInterrupt:
        sys.stderr.write("frameproof: interrupted before anything was sent\n")
        return 130
    return real_main()
