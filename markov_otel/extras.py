"""The optional extras (`pip install 'markov-otel[server]'`…): whether one is installed, and the
line that installs it. A note or error naming a next step names one that works where it runs."""

from __future__ import annotations

import importlib.util

__all__ = ["SERVER", "installed", "missing_extra", "pip_line", "serve_step"]

SERVER = "server"
_MODULES = {
    SERVER: ("starlette", "uvicorn", "opentelemetry.proto", "google.protobuf", "google.rpc",
             "orjson", "msgspec")
}  # fmt: skip
"""The modules each extra brings that every use of it imports (enough to tell it is there)."""
_SOMETIMES = {SERVER: ("psycopg",)}  # only for --db postgresql://…


def pip_line(extra: str) -> str:
    """`pip install 'markov-otel[server]'`: quoted, as zsh would otherwise glob the brackets."""
    return f"pip install 'markov-otel[{extra}]'"


def installed(extra: str) -> bool:
    """Whether the modules of `extra` can be imported here (found, not imported: cheap)."""
    for module in _MODULES[extra]:
        try:
            if importlib.util.find_spec(module) is None:
                return False
        except (ImportError, ValueError):  # a parent package missing, or a broken entry
            return False
    return True


def missing_extra(exc: ImportError) -> str | None:
    """The extra whose absence `exc` is, or None when it is something else."""
    name = exc.name or ""
    for extra, modules in _MODULES.items():
        for module in modules + _SOMETIMES.get(extra, ()):
            if name and (name == module or (name + ".").startswith(module + ".")
                         or module.startswith(name + ".")):  # fmt: skip
                return extra
    return None


def serve_step() -> str:
    """How to start a backend here: `mkv serve`, after the pip line when the extra is missing."""
    if installed(SERVER):
        return "`mkv serve`"
    return f"`{pip_line(SERVER)}` then `mkv serve`"
