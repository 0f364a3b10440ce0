"""markov_otel: MarkovML's ExperimentRecorder API on OpenTelemetry.

>>> from markov_otel import ExperimentRecorder, RecordingMode
>>> recorder = ExperimentRecorder(name="demo", recording_mode=RecordingMode.OFFLINE)
"""

from __future__ import annotations

__version__ = "0.1.0"

from markov_otel.alerts import (
    AlertReader,
    BinaryOperation,
    ExperimentAlertCondition,
)
from markov_otel.arguments import ModelClass
from markov_otel.config import RecordingMode
from markov_otel.errors import (
    BackendError,
    ConfigError,
    MarkovError,
    RecorderStateError,
)
from markov_otel.recorder import ExperimentRecorder
from markov_otel.summary import ExperimentSummary

__all__ = [
    "AlertReader",
    "BackendError",
    "BinaryOperation",
    "ConfigError",
    "ExperimentAlertCondition",
    "ExperimentRecorder",
    "ExperimentSummary",
    "MarkovError",
    "ModelClass",
    "RecorderStateError",
    "RecordingMode",
    "__version__",
]
