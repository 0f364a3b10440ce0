"""markov_otel: MarkovML's ExperimentRecorder API on OpenTelemetry.

>>> from markov_otel import ExperimentRecorder, RecordingMode
>>> recorder = ExperimentRecorder(name="demo", recording_mode=RecordingMode.OFFLINE)

The names below are imported on first use (PEP 562): `import markov_otel.otel.encoding`, which
the encoder process does, then costs ~50 ms instead of ~220 (the recorder brings the OTel SDK,
requests and protobuf), and a tight loop's records wait that much less for it to start.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from markov_otel.config import RecordingMode
    from markov_otel.errors import BackendError, ConfigError, MarkovError, RecorderStateError
    from markov_otel.recording.alerts import AlertReader, BinaryOperation, ExperimentAlertCondition
    from markov_otel.recording.arguments import ModelClass
    from markov_otel.recording.images import Image
    from markov_otel.recording.recorder import ExperimentRecorder
    from markov_otel.recording.summary import ExperimentSummary

_WHERE = {
    "AlertReader": "markov_otel.recording.alerts",
    "BinaryOperation": "markov_otel.recording.alerts",
    "ExperimentAlertCondition": "markov_otel.recording.alerts",
    "ModelClass": "markov_otel.recording.arguments",
    "Image": "markov_otel.recording.images",
    "RecordingMode": "markov_otel.config",
    "BackendError": "markov_otel.errors",
    "ConfigError": "markov_otel.errors",
    "MarkovError": "markov_otel.errors",
    "RecorderStateError": "markov_otel.errors",
    "ExperimentRecorder": "markov_otel.recording.recorder",
    "ExperimentSummary": "markov_otel.recording.summary",
}

__all__ = [
    "AlertReader",
    "BackendError",
    "BinaryOperation",
    "ConfigError",
    "ExperimentAlertCondition",
    "ExperimentRecorder",
    "ExperimentSummary",
    "Image",
    "MarkovError",
    "ModelClass",
    "RecorderStateError",
    "RecordingMode",
    "__version__",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'markov_otel' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is a plain global
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})
