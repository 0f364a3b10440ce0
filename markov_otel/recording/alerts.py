"""Alert conditions, the synchronous check on add_record, and AlertReader.

A condition fires when it becomes true, and again only after it was false in between; a NaN is
no evidence either way (it neither fires nor re-arms). The check runs on the training thread (a
dict lookup and a comparison per condition); everything else — log events, the backend, the
notifications to people (`notices.py`, rate-limited per condition) — happens on background
threads.
"""

from __future__ import annotations

import enum
import logging
import operator
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.metrics.export import (
    Gauge,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
    Sum,
)

from markov_otel.errors import ConfigError

log = logging.getLogger("markov_otel.recording.alerts")


class BinaryOperation(str, enum.Enum):
    """The comparison of an alert condition; members compare equal to their symbol."""

    LESS_THAN = "<"
    LESS_THAN_OR_EQUAL = "<="
    GREATER_THAN = ">"
    GREATER_THAN_OR_EQUAL = ">="
    EQUAL = "=="
    NOT_EQUAL = "!="


_COMPARE: dict[BinaryOperation, Callable[[Any, Any], bool]] = {
    BinaryOperation.LESS_THAN: operator.lt,
    BinaryOperation.LESS_THAN_OR_EQUAL: operator.le,
    BinaryOperation.GREATER_THAN: operator.gt,
    BinaryOperation.GREATER_THAN_OR_EQUAL: operator.ge,
    BinaryOperation.EQUAL: operator.eq,
    BinaryOperation.NOT_EQUAL: operator.ne,
}


@dataclass(frozen=True)
class ExperimentAlertCondition:
    """`metric_name operation metric_value`, e.g. ('loss', BinaryOperation.LESS_THAN, 0.25)."""

    metric_name: str
    operation: BinaryOperation
    metric_value: float

    def __post_init__(self) -> None:
        if not isinstance(self.metric_name, str) or not self.metric_name:
            raise ConfigError(f"metric_name={self.metric_name!r} must be a non-empty string")
        try:
            op = BinaryOperation(self.operation)
        except ValueError:
            symbols = ", ".join(o.value for o in BinaryOperation)
            raise ConfigError(
                f"operation={self.operation!r} is not one of {symbols}; use BinaryOperation.*"
            ) from None
        object.__setattr__(self, "operation", op)
        if isinstance(self.metric_value, bool) or not isinstance(self.metric_value, (int, float)):
            try:
                value = float(self.metric_value)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"metric_value={self.metric_value!r} must be a number, e.g. 0.25"
                ) from None
            object.__setattr__(self, "metric_value", value)

    def holds(self, value: Any) -> bool:
        return _COMPARE[self.operation](value, self.metric_value)

    def __str__(self) -> str:
        return f"{self.metric_name} {self.operation.value} {self.metric_value}"


@dataclass(frozen=True)
class AlertFiring:
    """One firing: which condition, with which value, at which step and time."""

    condition: ExperimentAlertCondition
    text: str
    value: Any
    step: int | None
    time_unix_nano: int
    alert_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def to_json(self) -> dict[str, Any]:
        """The protocol's alert object (docs/protocol.md)."""
        return {
            "alert_id": self.alert_id,
            "metric_name": self.condition.metric_name,
            "operation": self.condition.operation.value,
            "threshold": self.condition.metric_value,
            "text": self.text,
            "value": _json_number(self.value),
            "step": self.step,
            "time_unix_nano": self.time_unix_nano,
        }

    def message(self) -> str:
        return f"{self.text} ({self.condition.metric_name}={self.value} at step {self.step})"


def _json_number(value: Any) -> Any:
    value = float(value)
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    return value


class _Rule:
    __slots__ = ("active", "condition", "text")

    def __init__(self, condition: ExperimentAlertCondition, text: str) -> None:
        self.condition, self.text, self.active = condition, text, False


class AlertRules:
    """The conditions of one recorder, checked synchronously; firings queue for the flusher."""

    def __init__(self) -> None:
        self._by_metric: dict[str, list[_Rule]] = {}
        self.fired: deque[AlertFiring] = deque()

    def __bool__(self) -> bool:
        return bool(self._by_metric)

    def add(self, condition: ExperimentAlertCondition, text: str) -> None:
        if not isinstance(condition, ExperimentAlertCondition):
            raise ConfigError(
                f"condition={condition!r} must be an ExperimentAlertCondition, e.g. "
                "ExperimentAlertCondition('loss', BinaryOperation.LESS_THAN, 0.25)"
            )
        if not isinstance(text, str):
            raise ConfigError(f"text={text!r} must be a string: the alert's message")
        self._by_metric.setdefault(condition.metric_name, []).append(_Rule(condition, text))

    def check(self, values: Mapping[str, Any], time_ns: int, step: int | None) -> None:
        for metric, rules in self._by_metric.items():
            value = values.get(metric)
            if value is None or value != value:  # absent, or NaN: the state stays as it was
                continue
            for rule in rules:
                hit = rule.condition.holds(value)
                if hit and not rule.active:
                    self.fired.append(AlertFiring(rule.condition, rule.text, value, step, time_ns))
                rule.active = hit

    def conditions(self) -> list[tuple[ExperimentAlertCondition, str]]:
        return [(r.condition, r.text) for rules in self._by_metric.values() for r in rules]


class _AlertExporter(MetricExporter):
    """Applies conditions to every exported gauge/sum point, per metric and attribute set."""

    def __init__(
        self,
        alerts: Sequence[tuple[ExperimentAlertCondition, str]],
        notify: Callable[[AlertFiring], None],
    ) -> None:
        super().__init__()
        self._alerts = list(alerts)
        self._notify = notify
        self._active: dict[tuple[int, Any], bool] = {}

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        for name, attrs, value, time_ns in _points(metrics_data):
            if value != value:  # NaN neither fires nor re-arms, as on add_record
                continue
            for index, (condition, text) in enumerate(self._alerts):
                if condition.metric_name != name:
                    continue
                series = (index, attrs)
                hit = condition.holds(value)
                if hit and not self._active.get(series, False):
                    self._notify(AlertFiring(condition, text, value, None, time_ns))
                self._active[series] = hit
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        return None


def _points(data: MetricsData) -> Iterable[tuple[str, Any, float, int]]:
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if not isinstance(metric.data, (Gauge, Sum)):
                    continue
                for point in metric.data.data_points:
                    attrs = tuple(sorted((point.attributes or {}).items()))
                    yield metric.name, attrs, point.value, point.time_unix_nano


class AlertReader(PeriodicExportingMetricReader):
    """A MetricReader for an application's own MeterProvider that fires our alert conditions.

    ``MeterProvider(metric_readers=[AlertReader([(condition, "text")], recorder=recorder)])``:
    firings go into the recorder's run (log event, backend, webhook) when one is given, and to
    ``on_alert`` and the ``markov_otel.recording.alerts`` logger in any case.
    """

    def __init__(
        self,
        alerts: Sequence[tuple[ExperimentAlertCondition, str]],
        *,
        recorder: Any = None,
        on_alert: Callable[[AlertFiring], None] | None = None,
        interval_seconds: float = 1.0,
    ) -> None:
        rules = AlertRules()
        for condition, text in alerts:
            rules.add(condition, text)  # validates
        if interval_seconds <= 0:
            raise ConfigError(f"interval_seconds={interval_seconds!r} must be positive")
        self._recorder, self._on_alert = recorder, on_alert
        self.firings: list[AlertFiring] = []
        exporter = _AlertExporter(rules.conditions(), self._fire)
        super().__init__(exporter, export_interval_millis=interval_seconds * 1000)

    def _fire(self, firing: AlertFiring) -> None:
        self.firings.append(firing)
        log.warning("alert: %s", firing.message())
        if self._recorder is not None:
            self._recorder._deliver_external_alert(firing)
        if self._on_alert is not None:
            self._on_alert(firing)
