"""ExperimentRecorder: MarkovML's recording API, and the add_record hot path.

add_record stamps the time and step, copies the record, appends it to a deque and checks the
alert conditions: no I/O, no lock, no SDK call. Everything else happens on the flusher thread
(flusher.py) and, online, the sender thread (sender.py). See docs/architecture.md for the
picture.

The class is assembled from parts, one job each (mixins, from the top): lifecycle.py (start,
stop, signals, exit and fork), background.py (what the flusher, the sampler and the artifact
copier call back), registration.py (what the recording says of itself: recording.json, the
backend's registration, the resource, hyperparameters, resuming), steps.py (default and
explicit steps), environment.py (capture and rebuild). The documented methods are here and
delegate to them; add_record and its slow path stay here, where they are fast.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from time import time_ns as _time_ns
from types import TracebackType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace

from markov_otel.config import RecordingMode, cooldown_seconds, redact_url
from markov_otel.errors import ConfigError
from markov_otel.otel.providers import AggregatedView
from markov_otel.otel.series import SeriesTable
from markov_otel.recording import distributed
from markov_otel.recording.alerts import AlertRules, ExperimentAlertCondition
from markov_otel.recording.arguments import ModelClass, queue_config, recorder_settings
from markov_otel.recording.artifacts import ArtifactCopier, check_artifact
from markov_otel.recording.images import Image, pixels
from markov_otel.recording.lifecycle import Lifecycle, State
from markov_otel.recording.steps import default_steps
from markov_otel.recording.summary import ExperimentSummary
from markov_otel.recording.values import PLAIN_TYPES, Flattener, shape_flattener, split_record
from markov_otel.recording.watch import Watch
from markov_otel.rules import check_key
from markov_otel.shipping.flusher import FIELDS
from markov_otel.shipping.spool import Spool, check_run_id

MAX_BUFFERED = 200_000
"""Records held in memory before add_record waits for the flusher (backpressure, never loss)."""
KICK_STEP = 256
"""Records between two looks at the flusher while it lags (about 0.3 ms of a tight loop)."""
MAX_SHAPES = 1024
"""Shapes of nested records learnt for the fast path (`_learn_shape`)."""
MAX_OTHER_BYTES = 256 << 20
"""Bytes of array copies and texts waiting for the flusher before add_record waits for it."""
MAX_BUFFERED_POINTS = 2_000_000
"""Points held in memory likewise: a record of 300 keys counts 300 (about 100 bytes a point)."""


_plain_types = PLAIN_TYPES.issuperset


class ExperimentRecorder(Lifecycle):
    """Records one experiment: ``with recorder: recorder.add_record({'loss': 0.9})``.

    Extras (keyword-only, through ``**kwargs``): ``batch_size`` (records per batch, 1000),
    ``batch_processing_interval`` (seconds between flushes, 1.0), ``register_batch_timeout``
    (seconds for one backend call, 10), ``sync_data_timeout`` (seconds stop() may wait, 30),
    ``max_batch_bytes`` (bytes per batch, 4 MiB),
    ``recording_id`` (resume an existing recording), ``markov_dir``, ``endpoint``, ``api_key``,
    ``webhook_url``, ``system_metrics`` (sample host, process and GPU metrics, True),
    ``system_metrics_interval`` (seconds, 10), ``ranks`` (in a distributed job, whose
    add_record values are recorded: "0" or "all"). ``recording_mode=None`` follows
    `mkv mode` / ``MARKOV_MODE``; where no mode is set, ONLINE if an endpoint is configured,
    else OFFLINE (said once, with how to go online).
    """

    def __init__(
        self,
        name: str,
        project_id: str = "",
        notes: str | None = None,
        dataset_id: str = "",
        model_class: ModelClass = ModelClass.CLASSIFICATION,
        hyper_parameters: dict[str, Any] | None = None,
        recording_mode: RecordingMode | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"name={name!r} must be a non-empty string, e.g. 'resnet-baseline'")
        self._queue = queue_config(kwargs)
        self._settings = recorder_settings(recording_mode, kwargs)
        self._describe(name, project_id, notes, dataset_id, model_class, metadata)
        # Under torchrun (RANK, WORLD_SIZE): the job's shared recording (distributed.py).
        self._launch, shared_id = distributed.from_environment(
            self._name, kwargs.get("recording_id"), self._settings.ranks
        )
        self._recording_id = check_run_id(shared_id or uuid.uuid4().hex)
        self._model_id = (
            distributed.model_id(self._recording_id)
            if self._launch
            else f"model-{uuid.uuid4().hex[:16]}"
        )
        self._spool = Spool.for_run(
            self._settings.dir, distributed.run_dir_name(self._recording_id, self._launch)
        )
        self._prepare_hot_path()
        self._prepare_lifecycle()
        if hyper_parameters:
            self.add_hyper_parameters(hyper_parameters)
        self._go_on(kwargs.get("recording_id"))  # resuming: from the run dir or the backend
        if self._launch is not None and not self._launch.records_values:
            self.add_record = self._add_record_elsewhere  # type: ignore[method-assign]

    def _prepare_hot_path(self) -> None:
        """add_record's state, with one-attribute-load copies of what it calls: a bound method
        or a number instead of a dict lookup or a state compare."""
        self._running = False  # the state is RUNNING, as one cheap check for add_record
        self._alerts = AlertRules()
        self._check_alerts: Callable[[Mapping[str, Any], int, int], None] | None = None
        self._max_buffered = MAX_BUFFERED  # lowered for wide records (_normalize)
        # In buffer items (FIELDS per record), as len(self._buffer) counts them.
        self._kick_base = min(self._queue["batch_size"], MAX_BUFFERED) * FIELDS
        self._kick_at: int = self._kick_base  # raised while the flusher lags (see _kick)
        self._shapes: dict[tuple[str, ...], Flattener] = {}  # nested records (_learn_shape)
        self._shape_of = self._shapes.get
        self._max_lag_ns = int(self._queue["batch_processing_interval"] * 0.5e9)
        self._buffer: deque[Any] = deque()  # time, step, values of each record, flat
        self._others: deque[Any] = deque()  # (time, step, key, array copy or text): _add_others
        self._others_in = 0  # their bytes put in (the flusher counts those it took)
        self._steps: Iterator[int] = default_steps(0)
        self._plain_keys: set[str] = set()
        self._keys_known = self._plain_keys.issuperset
        self._extend = self._buffer.extend
        self._view = AggregatedView()
        tag_rank = self._launch.rank if self._launch and self._launch.tag_rank else None
        self._series = SeriesTable(tag_rank)  # keys with attributes: system samples, ranks

    # -- properties (as documented) ------------------------------------------------------------

    @property
    def config(self) -> dict[str, Any]:
        """The resolved settings and queue config of this recorder (never the API key)."""
        s = self._settings
        return {
            "recording_mode": s.mode,
            "endpoint": redact_url(s.endpoint),
            "markov_dir": str(s.dir),
            "run_dir": str(self._spool.dir),
            "api_key_set": bool(s.api_key),
            "prometheus_port": self._prometheus_port(),
            "system_metrics": s.system_metrics,
            "system_metrics_interval": s.system_metrics_interval,
            "ranks": s.ranks,
            "distributed": self._launch.describe() if self._launch else None,
            **self._queue,
        }

    def _prometheus_port(self) -> int | None:
        """The scrape port actually bound once started (the setting may say 0: any port)."""
        telemetry = getattr(self, "_telemetry", None)
        return telemetry.prometheus_port if telemetry else self._settings.prometheus_port

    @property
    def experiment_url(self) -> str | None:
        """Experiment page on the backend (ONLINE), else the run dir as a file:// URL."""
        return self._experiment_url or self._spool.dir.resolve().as_uri()

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def name(self) -> str:
        return self._name

    @property
    def notes(self) -> str | None:
        return self._notes

    @property
    def project_id(self) -> str:
        return self._project_id

    @property
    def recording_id(self) -> str:
        return self._recording_id

    @property
    def summary(self) -> ExperimentSummary:
        return self._summary

    @property
    def run_dir(self) -> Path:
        """Extra: where this recording's files are."""
        return self._spool.dir

    # -- the hot path --------------------------------------------------------------------------

    def add_record(self, record: dict[str, Any], *, step: int | None = None) -> None:
        """Record numbers for one step; ``step=`` (extra) overrides previous step + 1."""
        if not self._running:
            raise self._not_running()
        time_ns = _time_ns()
        values: dict[str, Any] | None = None
        if type(record) is dict and record:  # empty: normalize_record's ConfigError
            if self._keys_known(record) and _plain_types(map(type, record.values())):
                values = record.copy()  # flat, keys seen valid before, plain numbers
            else:  # nesting dicts in a learnt shape: flattened by that shape's function
                shape = self._shape_of(tuple(record))
                values = None if shape is None else shape(record)
        if values is None:
            if type(record) is dict and any(type(v) is Image for v in record.values()):
                return self._add_images(record, step)
            return self._add_slow(record, time_ns, step)
        # next() of the default steps is C code under the GIL: threads never share a step.
        if step is None:
            step = next(self._steps)
        else:  # the step the defaults would give (a loop's step=i) leaves them as they are
            try:
                taken = next(self._steps) if type(step) is int else None
            except ConfigError:  # the default steps ran out at 2**63-1: this one is given
                taken = None
            if step != taken:
                step = self._explicit_step(step, taken)
        self._extend((time_ns, step, values))  # the buffer, flat: see flusher.FIELDS
        if self._check_alerts is not None:
            self._check_alerts(values, time_ns, step)
        if len(self._buffer) >= self._kick_at:
            self._kick(time_ns)

    def _add_slow(self, record: Any, time_ns: int, step: int | None) -> None:
        """add_record for what the fast path does not know: new keys, nested dicts, converted
        values, arrays and texts. Everything is checked before anything is kept."""
        values, others = self._normalize(record)
        step = next(self._steps) if step is None else self._given_step(step)
        if values:
            self._extend((time_ns, step, values))
            if self._check_alerts is not None:
                self._check_alerts(values, time_ns, step)
        if others:
            self._add_others(time_ns, step, others)
        if len(self._buffer) >= self._kick_at:
            self._kick(time_ns)

    def _add_others(self, time_ns: int, step: int, others: dict[str, Any]) -> None:
        """Arrays (the caller's copies) and texts, for the flusher to bucket and encode; while
        MAX_OTHER_BYTES of them wait, add_record waits for it (backpressure, never a drop)."""
        for key, value in others.items():
            self._others.append((time_ns, step, key, value))
            self._others_in += len(value) if type(value) is str else int(value.nbytes)
        while self._others_in - self._flusher.others_out > MAX_OTHER_BYTES:
            if not self._flusher.alive:
                break
            self._flusher.wake()
            time.sleep(0.001)

    def add_artifact(
        self,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        kind: str = "file",
        metadata: dict[str, Any] | None = None,
        step: int | None = None,
    ) -> None:
        """Keep a file or directory with the recording (kind: file, model, checkpoint, dataset;
        "model" is the model behind `model_id`). Returns at once: the copy is made in the
        background (recording/artifacts.py) and uploaded after the points."""
        if not self._running:
            raise self._not_running()
        event = check_artifact(path, name, kind, metadata)
        if self._artifacts is None:
            self._artifacts = ArtifactCopier(self._spool.dir, self._artifact_stored)
        self._artifacts.add(event, step)

    def _add_images(self, record: dict[str, Any], step: int | None) -> None:
        """add_record of a record holding Image values: all checked first (nothing kept of a
        bad record), the numbers recorded as usual, the images handed to the artifact thread."""
        images = {k: pixels(k, v) for k, v in record.items() if type(v) is Image}
        rest = {k: v for k, v in record.items() if type(v) is not Image}
        for key in images:
            check_key(key)
        if rest:
            split_record(rest)  # checked whole before anything is kept
        step = next(self._steps) if step is None else self._given_step(step)
        if rest:
            self.add_record(rest, step=step)
        if self._artifacts is None:
            self._artifacts = ArtifactCopier(self._spool.dir, self._artifact_stored)
        for key, array in images.items():
            self._artifacts.add_image(key, step, array, record[key].caption)

    def _add_record_elsewhere(self, record: dict[str, Any], *, step: int | None = None) -> None:
        """add_record on a rank N > 0 of a distributed job whose values rank 0 records (the
        default, ranks="0"): nothing is kept, the recorder's state is checked all the same."""
        if not self._running:
            raise self._not_running()

    def _normalize(self, record: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """The slow path: new keys, nested dicts, converted values. A record of a new width
        passes here once, so the bound in points is kept without a count on the fast path;
        the shape of a record nesting dicts one level deep is learnt (`_learn_shape`)."""
        values, others = split_record(record)
        if isinstance(record, dict) and not others:
            self._learn_shape(record, values)
            self._plain_keys.update(k for k in record if k in values)
        if len(values) * self._max_buffered > MAX_BUFFERED_POINTS:
            self._max_buffered = max(1, MAX_BUFFERED_POINTS // len(values))
            self._kick_base = min(self._kick_base, self._max_buffered * FIELDS)
            self._kick_at = min(self._kick_at, self._kick_base)
        return values, others

    def _learn_shape(self, record: dict[Any, Any], values: dict[str, Any]) -> None:
        """Remember the shape of a record nesting dicts (values.shape_flattener), so the next
        one like it takes the fast path (nested p50 within 1.5x the flat one). A bounded
        cache: keys made up on the fly stop being learnt, never being recorded."""
        if len(self._shapes) < MAX_SHAPES and any(type(v) is dict for v in record.values()):
            flatten = shape_flattener(record, values)
            if flatten is not None:
                self._shapes[tuple(record)] = flatten

    def _kick(self, now_ns: int) -> None:
        """Wake the flusher; wait for it (backpressure, never a drop) while it lags too far.

        Too far: MAX_BUFFERED records (fewer for wide records: MAX_BUFFERED_POINTS), or an
        oldest record older than half the flush interval — so a tight loop cannot run ahead of
        the disk, and a kill -9 loses at most the last flush interval. When nothing needs
        waiting for, the next look is KICK_STEP records later (the flusher's cycle resets it),
        so a loop running at the flusher's heels does not pay for this on every call.
        """
        buffer, flusher, most = self._buffer, self._flusher, self._max_buffered * FIELDS
        flusher.wake()
        if len(buffer) < most and now_ns - _oldest(buffer, now_ns) <= self._max_lag_ns:
            self._kick_at = len(buffer) + KICK_STEP * FIELDS
            return
        while flusher.alive and (
            len(buffer) >= most or now_ns - _oldest(buffer, now_ns) > self._max_lag_ns
        ):
            time.sleep(0.0005)

    # -- documented methods --------------------------------------------------------------------

    def add_hyper_parameters(self, hyper_parameters: dict[str, Any]) -> None:
        """Merge hyperparameters; they travel as `markov.hparam.<k>` resource attributes."""
        self._add_hparams(hyper_parameters)  # registration.py

    def watch(self, model: Any, *, every: int = 100, log: str = "gradients") -> Watch:
        """Extra: record a torch module's gradients ("gradients"), parameters ("parameters") or
        both ("all") every `every` passes, as per-layer norms and distributions, from hooks
        (recording/watch.py). Returns the watch; `.remove()` takes its hooks off."""
        return Watch(model, self._add_watched, self._next_default_step, every, log)

    def _next_default_step(self) -> int:
        """The step the loop's next default record takes (the last record's + 1), not taken."""
        if not self._running:
            return 0  # nothing is recorded before start() (_add_watched)
        with self._flusher.taking:  # buffered or already taken (see _append_sample)
            return (self._buffer[-2] if self._buffer else self._view.last_step) + 1

    def _add_watched(self, record: dict[str, Any], step: int) -> None:
        """A watched module's values at `step`, without taking a step: the loop's own steps go
        on as they were."""
        if not self._running:
            return
        time_ns = _time_ns()
        values, others = self._normalize(record)
        if values:
            self._extend((time_ns, step, values))
        if others:
            self._add_others(time_ns, step, others)

    def attach_alert_on(
        self, condition: ExperimentAlertCondition, text: str, *, cooldown: float | None = None
    ) -> None:
        """Fire `text` when `condition` becomes true on a recorded value (checked in add_record).
        Extra: ``cooldown`` seconds between two notifications of it (default `alert_cooldown`,
        60); every firing is kept in the run all the same."""
        seconds = None if cooldown is None else cooldown_seconds(cooldown)
        self._alerts.add(condition, text)
        self._notices.set_cooldown(condition, text, seconds)
        self._check_alerts = self._alerts.check

    def register(self) -> None:
        """Create the run dir and, ONLINE, register with the backend (never raises for weather)."""
        self._register_once()  # lifecycle.py; the work is registration.py's

    def start(self) -> None:
        """Start recording: registers if needed, opens the experiment span, starts the flusher."""
        self._start()  # lifecycle.py

    def stop(self, *, status: str = "finished") -> None:
        """Flush everything to disk, close the span, and ONLINE wait up to sync_data_timeout."""
        self._stop(status)  # lifecycle.py

    def __enter__(self) -> ExperimentRecorder:
        if self._state is not State.RUNNING:
            self.start()
        self._context_token = None
        if self._settings.trace_children:
            self._context_token = otel_context.attach(trace.set_span_in_context(self._span))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._context_token is not None:
            otel_context.detach(self._context_token)
        failed = exc is not None and not (isinstance(exc, SystemExit) and exc.code in (0, None))
        interrupted = isinstance(exc, KeyboardInterrupt)
        if failed and exc is not None:
            self._failure = exc
        self.stop(status="interrupted" if interrupted else "failed" if failed else "finished")

    def __repr__(self) -> str:
        return (
            f"ExperimentRecorder(name={self._name!r}, recording_id={self._recording_id!r}, "
            f"mode={self._settings.mode.value!r}, status={self._status!r})"
        )


def _oldest(buffer: deque[Any], default: int) -> int:
    """Time of the oldest buffered record (the flusher may empty the deque meanwhile)."""
    try:
        return buffer[0]
    except IndexError:
        return default
