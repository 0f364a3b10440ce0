"""`python -m markov_otel.server`: the same options as `mkv serve` (server/options.py)."""

from __future__ import annotations

import sys

from markov_otel.server.options import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
