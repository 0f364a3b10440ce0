"""The errors markov_otel raises on purpose.

```
MarkovError                           base of every error we raise on purpose
├── ConfigError(ValueError)           a bad setting or argument; raised before any I/O
├── RecorderStateError(RuntimeError)  add_record before start(), start() twice …
└── BackendError                      the backend refused or is unreachable (CLI and sync only)
```

Weather (network, disk, backend) on the recording path is never raised into training code: it is
logged once and the data stays on disk for `mkv sync`. `BackendError` only reaches callers of
the CLI and of explicit sync calls.
"""

from __future__ import annotations

__all__ = ["BackendError", "ConfigError", "MarkovError", "RecorderStateError"]


class MarkovError(Exception):
    """Base of every error markov_otel raises on purpose."""


class ConfigError(MarkovError, ValueError):
    """A bad setting or argument, raised before any I/O happens."""


class RecorderStateError(MarkovError, RuntimeError):
    """A recorder method called in the wrong lifecycle state."""


class BackendError(MarkovError):
    """The Markov backend refused a request or could not be reached."""
