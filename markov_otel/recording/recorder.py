"""ExperimentRecorder: MarkovML's recording API — lifecycle, and the add_record hot path.

add_record stamps the time and step, copies the record, appends it to a deque and checks the
alert conditions: no I/O, no lock, no SDK call. Everything else happens on the flusher thread
(flusher.py) and, online, the sender thread (sender.py). See docs/architecture.md for the
picture.
"""

from __future__ import annotations

import enum
import itertools
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from time import time_ns as _time_ns
from types import TracebackType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from markov_otel import process
from markov_otel.config import RecordingMode, Settings, cooldown_seconds, redact_url
from markov_otel.errors import ConfigError, RecorderStateError
from markov_otel.otel.encoding import attributes_json
from markov_otel.otel.providers import AggregatedView, Telemetry, otlp_configured
from markov_otel.otel.resource import experiment_attributes
from markov_otel.otel.series import SeriesTable
from markov_otel.recording import distributed
from markov_otel.recording.alerts import AlertFiring, AlertRules, ExperimentAlertCondition
from markov_otel.recording.arguments import (
    ModelClass,
    model_class_value,
    note_recording_locally,
    queue_config,
    recorder_settings,
)
from markov_otel.recording.artifacts import ArtifactCopier, check_artifact
from markov_otel.recording.environment import RecordedEnvironment
from markov_otel.recording.images import Image, pixels
from markov_otel.recording.notices import AlertNotices, WebhookNotifier
from markov_otel.recording.steps import default_steps
from markov_otel.recording.summary import ExperimentSummary
from markov_otel.recording.system_metrics import SystemSampler
from markov_otel.recording.values import PLAIN_TYPES, Flattener, shape_flattener, split_record
from markov_otel.recording.watch import Watch
from markov_otel.rules import (
    MAX_TEXT_BYTES,
    STEP_MAX,
    STEP_MIN,
    check_key,
    check_params,
    check_step,
    check_text,
    flatten_params,
)
from markov_otel.shipping.flusher import FIELDS, Flusher
from markov_otel.shipping.sender import Sender
from markov_otel.shipping.spool import Spool, check_run_id
from markov_otel.shipping.transport import Target, patch_body, registration_body
from markov_otel.weather import SayOnce

log = logging.getLogger("markov_otel")

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
ARTIFACT_RESERVE = 5.0
"""Seconds of stop()'s deadline (or half of what is left, if less) that pending artifact copies
leave to the points' final drain and sending: a copy resumes from its source, points do not."""


_plain_types = PLAIN_TYPES.issuperset


class _State(enum.Enum):
    CREATED, REGISTERED, RUNNING, STOPPED = range(4)


class ExperimentRecorder(RecordedEnvironment):
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
        self._name = check_text("name", name)
        self._project_id = check_text("project_id", str(project_id or ""))
        self._notes = None if notes is None else check_text("notes", notes, MAX_TEXT_BYTES)
        self._dataset_id = check_text("dataset_id", str(dataset_id or ""))
        self._model_class = model_class_value(model_class)
        self._hparams: dict[str, Any] = {}
        self._metadata = _checked_params("metadata", metadata)
        flatten_params(self._metadata)
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
        self._experiment_url: str | None = None
        self._summary = ExperimentSummary(on_change=self._resource_changed)
        self._alerts = AlertRules()
        self._notices = AlertNotices(self._settings.alert_cooldown, name=self._name)
        self._check_alerts: Callable[[Mapping[str, Any], int, int], None] | None = None
        # Hot-path copies: one attribute load each instead of a dict lookup or a state compare.
        self._max_buffered = MAX_BUFFERED  # lowered for wide records (_normalize)
        # In buffer items (FIELDS per record), as len(self._buffer) counts them.
        self._kick_base = min(self._queue["batch_size"], MAX_BUFFERED) * FIELDS
        self._kick_at: int = self._kick_base  # raised while the flusher lags (see _kick)
        self._shapes: dict[tuple[str, ...], Flattener] = {}  # nested records (_learn_shape)
        self._shape_of = self._shapes.get
        self._max_lag_ns = int(self._queue["batch_processing_interval"] * 0.5e9)
        self._alert_log: list[dict[str, Any]] = []
        self._state = _State.CREATED
        self._status = "created"
        self._running = False  # _state is RUNNING, as one cheap check for add_record
        self._buffer: deque[Any] = deque()  # time, step, values of each record, flat
        self._others: deque[Any] = deque()  # (time, step, key, array copy or text): _add_others
        self._others_in = 0  # their bytes put in (the flusher counts those it took)
        self._steps: Iterator[int] = default_steps(0)
        # recording_id= adds to a recording that may have finished: the backend only lets an
        # explicit PATCH (not a batch) turn a finished recording back to running.
        self._resuming = bool(kwargs.get("recording_id"))
        self._plain_keys: set[str] = set()
        # Bound methods for add_record: one attribute load each instead of two lookups.
        self._keys_known = self._plain_keys.issuperset
        self._extend = self._buffer.extend
        self._view = AggregatedView()
        self._resource_version = 0
        self._resource_cache: tuple[int, str] = (-1, "")
        self._spool = Spool.for_run(
            self._settings.dir, distributed.run_dir_name(self._recording_id, self._launch)
        )
        tag_rank = self._launch.rank if self._launch and self._launch.tag_rank else None
        self._series = SeriesTable(tag_rank)  # keys with attributes: system samples, ranks
        self._sampler: SystemSampler | None = None
        self._lock = threading.RLock()
        self._sender: Sender | None = None
        self._exit_status: str | None = None  # set by SIGTERM: the run was terminated
        self._failure: BaseException | None = None  # what ended `with recorder:` with failed
        self._forked_from: int | None = None  # set in a forked child: the recording process
        self._mirror: Sender | None = None  # exact points to the user's collector (export_points)
        self._started_at: float | None = None
        self._env_thread: threading.Thread | None = None
        self._hurried = False  # a signal came during stop(): stop waiting for the network
        self._ended_at: float | None = None
        self._saved_at = 0.0  # monotonic time of the last recording.json save
        self._trouble = SayOnce(log)
        self._artifacts: ArtifactCopier | None = None  # made by the first add_artifact
        if hyper_parameters:
            self.add_hyper_parameters(hyper_parameters)
        shared = self._recording_id if self._launch else None  # a restarted job goes on
        on_disk = self._resume_if_existing(kwargs.get("recording_id") or shared)
        self._resuming |= on_disk
        # recording_id= with a fresh run dir (another machine): the backend knows where it was.
        self._ask_backend = bool(kwargs.get("recording_id")) and not on_disk
        self._answer: Mapping[str, Any] | None = None  # the backend's registration answer
        if self._launch is not None and not self._launch.records_values:
            self.add_record = self._add_record_elsewhere  # type: ignore[method-assign]

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

    def _given_step(self, step: Any) -> int:
        """An explicit step, as add_record's fast path takes it (see there)."""
        try:
            taken = next(self._steps) if type(step) is int else None
        except ConfigError:
            taken = None
        return step if step == taken else self._explicit_step(step, taken)

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

    def _artifact_stored(self, entry: dict[str, Any]) -> None:
        """The copier thread stored an artifact: a log record names it, the sender uploads it."""
        attributes = {
            "markov.key": entry["name"],
            "markov.artifact.kind": entry["kind"],
            "markov.artifact.digest": entry["digest"],
            "markov.artifact.media_type": entry["media_type"],
            "markov.artifact.size": entry["size"],
        }
        if "step" in entry:
            attributes["markov.step"] = entry["step"]
        if "key" in entry:  # an image value: its record key, and its file name
            attributes["markov.key"], attributes["markov.artifact.name"] = (
                entry["key"],
                entry["name"],
            )
        body = f"artifact {entry['name']} ({entry['kind']}, {entry['size']} bytes)"
        self._telemetry.event("markov.artifact", attributes, body=body, span=self._span)
        for sender in self._senders():
            sender.wake()

    def _add_record_elsewhere(self, record: dict[str, Any], *, step: int | None = None) -> None:
        """add_record on a rank N > 0 of a distributed job whose values rank 0 records (the
        default, ranks="0"): nothing is kept, the recorder's state is checked all the same."""
        if not self._running:
            raise self._not_running()

    def _explicit_step(self, step: Any, taken: int | None = None) -> int:
        """A given step; the default steps continue after it. `taken`: a default step add_record
        took to compare, put back when the step is refused (a refused record uses no step)."""
        if type(step) is not int or not STEP_MIN <= step <= STEP_MAX:
            try:
                step = check_step(step)
            except ConfigError:
                if taken is not None:
                    self._steps = itertools.chain((taken,), self._steps)
                raise
        self._steps = default_steps(step + 1)
        return int(step)

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
        # Checked and copied now (objects become their str()): what the flusher encodes later
        # can no longer fail, nor change when the caller mutates its dict.
        values = _checked_params("hyper_parameters", hyper_parameters)
        with self._lock:
            flatten_params({**self._hparams, **values})  # a key given twice is refused now
            self._hparams.update(values)
        self._resource_changed()

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
        with self._lock:
            if self._state is not _State.CREATED:
                return
            self._spool.create()
            self._status = "registered"
            self._save()
            note_recording_locally(self._settings, self._recording_id, self._spool.dir)
            if self._settings.mode is RecordingMode.ONLINE:
                self._sender = Sender(
                    self._spool,
                    distributed.markov_target(Target.markov(self._settings), self._info()),
                    self._queue,
                    self._view,
                    on_registered=self._registered,
                )
                self._sender.register(self._registration())
                if self._ask_backend:
                    self._go_on_from_backend()
                if self._resuming:
                    self._sender.update_recording({"status": "running"})
            self._state = _State.REGISTERED

    def start(self) -> None:
        """Start recording: registers if needed, opens the experiment span, starts the flusher."""
        with self._lock:
            if self._state is _State.RUNNING:
                raise RecorderStateError(
                    f"recorder {self._name!r} is already started; call stop() before starting "
                    "again, or use a new ExperimentRecorder"
                )
            if self._state is _State.STOPPED:
                raise RecorderStateError(
                    f"recorder {self._name!r} was stopped; create a new ExperimentRecorder "
                    f"(pass recording_id={self._recording_id!r} to add to the same recording)"
                )
            self.register()
            if self._settings.export_points and otlp_configured(self._settings):
                self._mirror = Sender(self._spool, Target.otlp_points(self._settings), self._queue)
            self._status = "running"
            self._telemetry = Telemetry(
                self._spool,
                self._resource_info(),
                self._settings,
                self._view,
                distributed.id_generator(self._recording_id, self._launch),
            )
            self._view.summary = self._summary.to_dict
            self._spans = distributed.RunSpans(
                self._telemetry.tracer, self._name, self._recording_id, self._launch
            )
            self._span = self._spans.main
            self._notices.start(_notifiers(self._settings))
            self._flusher = Flusher(
                self._buffer,
                self._write_metrics,
                self._resource_json,
                batch_size=self._queue["batch_size"],
                max_batch_bytes=self._queue["max_batch_bytes"],
                interval=self._queue["batch_processing_interval"],
                on_cycle=self._after_cycle,
                view=self._view,
                series=self._series,
                encoder_process=self._settings.encoder_process,
                metrics_file=self._spool.path("metrics"),
                others=self._others,
                write_logs=self._write_logs,
            )
            # A resumed recording keeps its first start: its duration covers every piece.
            self._started_at = self._started_at or time.time()
            self._save()
            self._flusher.start()
            self._start_sampler()
            for sender in self._senders():
                sender.start()
            self._running = True
            self._state = _State.RUNNING
            process.track(self)
            self._lifecycle("started")
        if self._settings.capture_environment and (self._launch is None or self._launch.owner):
            self._env_thread = threading.Thread(
                target=self._capture_environment, name="markov-env", daemon=True
            )
            self._env_thread.start()

    def stop(self, *, status: str = "finished") -> None:
        """Flush everything to disk, close the span, and ONLINE wait up to sync_data_timeout."""
        with self._lock:
            if self._state is _State.STOPPED:
                return
            if self._state is not _State.RUNNING:
                raise RecorderStateError(
                    f"recorder {self._name!r} was never started; call start() (or use "
                    "`with recorder:`) before stop()"
                )
            deadline = time.monotonic() + self._queue["sync_data_timeout"]
            self._running = False
            self._state = _State.STOPPED
            process.untrack(self)
            # Ctrl-C or SIGTERM now would cut the drain short and lose the buffer: they wait
            # until the data is on disk (still within sync_data_timeout), then act.
            with process.signals_deferred(self._signalled_while_stopping):
                self._wind_down(self._exit_status or status, deadline)

    def _wind_down(self, status: str, deadline: float) -> None:
        """stop()'s work: the final batch on disk, the span closed, sending, then nothing held
        (no file descriptor, no thread) but what the deadline cut off."""
        if self._artifacts is not None:  # their log records before the closing ones
            # A copy is resumable from its source; the points are not: they keep the last
            # half of the time left (at most ARTIFACT_RESERVE s) for their drain and sending.
            left = deadline - time.monotonic()
            self._artifacts.stop(left - min(ARTIFACT_RESERVE, left / 2))
        self._status = status
        self._ended_at = time.time()
        if status == "failed" and self._launch is not None:
            self._name_failed_rank(self._launch)
        self._resource_changed()
        self._lifecycle(status)
        self._spans.end(Status(StatusCode.OK if status == "finished" else StatusCode.ERROR))
        if self._sampler is not None:  # its last sample goes into the final drain
            self._sampler.stop(deadline - time.monotonic())
        flushed = self._flusher.stop(max(0.1, deadline - time.monotonic()))
        self._spool_sync()
        closing = self._telemetry.begin_shutdown()  # the collector export, if any
        self._save()
        self._finish_sending(flushed, deadline)
        self._notices.close(max(0.0, deadline - time.monotonic()))
        closing.join(max(0.0, deadline - time.monotonic()))
        if closing.is_alive():
            log.warning(
                "markov_otel: the OTLP collector did not take the last export before "
                "sync_data_timeout; the run dir %s has everything",
                self._spool.dir,
            )
        if self._env_thread is not None:
            self._env_thread.join(max(0.0, deadline - time.monotonic()))
        self._save()  # the status a signal during stop() set, if one came
        self._spool.close()

    def _signalled_while_stopping(self, signum: int) -> None:
        """In the main thread, between bytecodes of stop(): say so, finish writing to disk, stop
        waiting for the network (what is on disk is safe for `mkv sync`)."""
        status = "interrupted" if signum == signal.SIGINT else "terminated"
        self._exit_status = self._status = status
        self._resource_changed()  # the final batch, if not cut yet, carries it
        self._hurried = True
        for sender in self._senders():
            sender.hurry()
        log.warning(
            "markov_otel: %s during stop(): finishing writing recording %s to disk, then "
            "stopping (anything unsent stays there for: mkv sync %s)",
            signal.Signals(signum).name, self._recording_id, self._recording_id,
        )  # fmt: skip

    def _name_failed_rank(self, launch: distributed.Launch) -> None:
        """A rank of a distributed job failed: the recording's metadata names it and its error,
        and a rank N > 0 sends that with the status (the one PATCH it sends)."""
        failure = self._failure or getattr(sys, "last_value", None)  # an uncaught exception
        error = f"{type(failure).__name__}: {failure}" if failure is not None else "failed"
        self._metadata.update(failed_rank=launch.rank, failed_error=error[:500])
        log.error(
            "markov_otel: rank %d of %d failed (%s); recording %s is marked failed",
            launch.rank, launch.world_size, error[:200], self._recording_id,
        )  # fmt: skip

    def _finish_sending(self, flushed: bool, deadline: float) -> None:
        if not flushed:
            log.error(
                "markov_otel: %d points of %s could not be written to %s before sync_data_timeout",
                self._flusher.backlog(),
                self._recording_id,
                self._spool.dir,
            )
        if self._hurried:
            deadline = time.monotonic()
        if self._mirror is not None and not self._mirror.stop(deadline - time.monotonic()):
            log.warning("markov_otel: not every exact point reached the OTLP collector in time")
        if self._sender is None:
            return
        self._sender.update_recording(self._patch_body())
        if self._status == "failed" and self._launch is not None and not self._launch.owner:
            failure = {"status": "failed", "metadata": dict(self._metadata)}
            self._sender.update_recording(failure, from_any_rank=True)
        if not self._sender.stop(max(0.0, deadline - time.monotonic())):
            log.warning(
                "markov_otel: recording %s is not fully sent%s; its data is safe in %s. "
                "Finish with: mkv sync %s",
                self._recording_id,
                self._sender.why_unsent(),
                self._spool.dir,
                self._recording_id,
            )

    def __enter__(self) -> ExperimentRecorder:
        if self._state is not _State.RUNNING:
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

    # -- internals -----------------------------------------------------------------------------

    def _note_signal(self, status: str) -> None:
        self._exit_status = status

    def _disown_after_fork(self, parent_pid: int) -> None:
        """In a forked child: the parent owns (and writes) the buffer; this copy records nothing."""
        self._running = False
        self._state = _State.STOPPED
        self._forked_from = parent_pid
        self._buffer.clear()
        self._others.clear()
        self._sender = self._mirror = None
        self._sampler = None  # its thread stayed in the parent

    def _not_running(self) -> RecorderStateError:
        if self._forked_from is not None:
            return RecorderStateError(
                f"add_record in process {os.getpid()}, forked from the recording process "
                f"{self._forked_from}: recorder {self._name!r} belongs to its parent. Return "
                "values to the parent (e.g. with the batch), or create a separate "
                "ExperimentRecorder in the worker"
            )
        if self._state is _State.STOPPED:
            return RecorderStateError(
                f"add_record after stop() on recorder {self._name!r}; record before stop(), or "
                "create a new ExperimentRecorder"
            )
        return RecorderStateError(
            f"add_record before start() on recorder {self._name!r}; call recorder.start() or "
            "use `with recorder:`"
        )

    def _resource_changed(self) -> None:
        self._resource_version += 1

    def _resource_json(self) -> str:
        version = self._resource_version
        if self._resource_cache[0] != version:
            attributes = experiment_attributes(self._resource_info())
            self._resource_cache = (version, attributes_json(attributes))
        return self._resource_cache[1]

    def _resource_info(self) -> Mapping[str, Any]:
        """What batches say of the recording (a rank N > 0 leaves status & co. to rank 0)."""
        return distributed.resource_info(self._info(), self._launch)

    def _start_sampler(self) -> None:
        if not self._settings.system_metrics:
            return
        self._sampler = SystemSampler(
            self._append_sample,
            self._series,
            self._settings.system_metrics_interval,
            rank=self._launch.rank if self._launch else None,
        )
        self._sampler.start()

    def _append_sample(self, time_ns: int, values: Mapping[str, float | int]) -> None:
        """A system sample as a record, with the step of the last record (0 before the first):
        the newest buffered, else the last the flusher took (see Flusher.taking)."""
        with self._flusher.taking:
            buffer = self._buffer
            step = buffer[-2] if buffer else max(self._view.last_step, 0)
            buffer.extend((time_ns, step, values))

    def _senders(self) -> list[Sender]:
        return [s for s in (self._sender, self._mirror) if s is not None]

    def _write_metrics(self, data: bytes, points: int) -> None:
        self._spool.append("metrics", data)

    def _write_logs(self, data: bytes) -> None:
        self._spool.append("logs", data)

    def _after_cycle(self) -> None:
        self._kick_at = self._kick_base  # the buffer was drained: kick at a full batch again
        while self._alerts.fired:
            self._deliver(self._alerts.fired.popleft())
        for sender in self._senders():
            sender.wake()
        now = time.monotonic()
        if now - self._saved_at > 2.0:
            self._save()

    def _deliver(self, firing: AlertFiring) -> None:
        self._alert_log.append(firing.to_json())
        attrs = {
            "markov.alert.metric": firing.condition.metric_name,
            "markov.alert.operation": firing.condition.operation.value,
            "markov.alert.threshold": firing.condition.metric_value,
            "markov.alert.value": float(firing.value),
            "markov.alert.text": firing.text,
            "markov.alert.id": firing.alert_id,
        }
        if firing.step is not None:
            attrs["markov.step"] = firing.step
        self._telemetry.event(
            "markov.alert",
            attrs,
            body=firing.message(),
            time_ns=firing.time_unix_nano,
            span=self._span,
        )
        self._notices(firing)  # a person hears of it at most once per cooldown
        if self._sender is not None:
            self._sender.update_recording({"alerts": [firing.to_json()]})

    def _deliver_external_alert(self, firing: AlertFiring) -> None:
        """From AlertReader (an app's own metrics): delivered by the flusher like our own."""
        if self._running:
            self._alerts.fired.append(firing)
            self._flusher.wake()

    def _lifecycle(self, step: str) -> None:
        self._telemetry.event(
            "markov.lifecycle",
            {"markov.lifecycle.step": step},
            body=f"recording {self._recording_id} {step}",
            span=self._span,
        )

    def _spool_sync(self) -> None:
        try:
            self._spool.sync()
        except OSError as exc:
            log.warning("markov_otel: fsync of %s failed: %s", self._spool.dir, exc)

    def _registration(self) -> dict[str, Any]:
        return registration_body(self._info())

    def _registered(self, answer: Mapping[str, Any]) -> None:
        self._experiment_url = answer.get("experiment_url") or self._experiment_url
        self._answer = answer

    def _go_on_from_backend(self) -> None:
        """Resuming from a fresh run dir: steps go on after the backend's last step, and the
        start time, model id, hyperparameters and summary are the recording's."""
        answer = self._answer
        if answer is None:  # weather: registration is retried in the background
            log.warning(
                "markov_otel: resuming recording %s from a fresh run dir %s, but the backend "
                "did not answer, so its steps here start at 0; pass step= to continue them",
                self._recording_id, self._spool.dir,
            )  # fmt: skip
            return
        last = answer.get("last_step")
        if type(last) is int:
            self._explicit_step(last)
            self._view.last_step = last
        self._started_at = _unix_seconds(answer.get("started_at")) or self._started_at
        self._model_id = str(answer.get("model_id") or self._model_id)
        self._hparams = {**(answer.get("hyper_parameters") or {}), **self._hparams}
        self._summary.update(answer.get("summary") or {})

    def _patch_body(self) -> dict[str, Any]:
        return patch_body(self._info())

    def _info(self) -> dict[str, Any]:
        """recording.json: identity, hyperparameters, summary, status (never the API key)."""
        return {
            "recording_id": self._recording_id,
            "name": self._name,
            "project_id": self._project_id,
            "notes": self._notes,
            "dataset_id": self._dataset_id,
            "model_class": self._model_class,
            "model_id": self._model_id,
            "metadata": dict(self._metadata),
            "hyper_parameters": dict(self._hparams),
            "summary": self._summary.to_dict(),
            "status": self._status,
            "mode": self._settings.mode.value,
            "endpoint": redact_url(self._settings.endpoint),  # never credentials in files
            "experiment_url": self._experiment_url,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": self._started_at,
            "ended_at": self._ended_at,
            "alerts": list(self._alert_log),
            "points": self._view.counts["spooled"],
            "last_step": self._view.last_step,
            "last_values": {k: v for k, (v, _s) in list(self._view.last.items())},
            **({"distributed": self._launch.describe()} if self._launch else {}),
        }

    def _save(self) -> None:
        """Save recording.json; a failure (disk full) is said once until a save works again."""
        self._saved_at = time.monotonic()
        try:
            self._spool.write_recording(self._info())
        except OSError as exc:
            self._trouble.say(
                "save", logging.WARNING,
                "markov_otel: cannot update %s/recording.json: %s", self._spool.dir, exc,
            )  # fmt: skip
        else:
            self._trouble.clear("save")

    def _resume_if_existing(self, recording_id: str | None) -> bool:
        """Go on from what the run dir holds; True when it held a recording."""
        if not recording_id:
            return False
        info = self._spool.read_recording()
        if not info:
            return False
        self._model_id = info.get("model_id") or self._model_id
        self._hparams = {**info.get("hyper_parameters", {}), **self._hparams}
        self._summary.update(info.get("summary", {}))
        self._alert_log = list(info.get("alerts", []))
        started = info.get("started_at")
        self._started_at = float(started) if isinstance(started, (int, float)) else None
        # The spool is the truth: recording.json is only as fresh as its last save before a
        # crash, so count the points and find the last step on disk.
        points, last_step = self._spool.points_on_disk()
        if last_step is None:
            last_step = int(info.get("last_step", -1))
        self._explicit_step(last_step)
        self._view.last_step = last_step
        self._view.counts["recorded"] = self._view.counts["spooled"] = points
        return True

    def __repr__(self) -> str:
        return (
            f"ExperimentRecorder(name={self._name!r}, recording_id={self._recording_id!r}, "
            f"mode={self._settings.mode.value!r}, status={self._status!r})"
        )


def _unix_seconds(iso: Any) -> float | None:
    """A backend time (ISO 8601) as Unix seconds; None if it is not one."""
    try:
        return datetime.fromisoformat(str(iso).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _checked_params(what: str, values: Any) -> dict[str, Any]:
    """rules.check_params, and what it converted with a loss (an int past int64) said once,
    here at the call, instead of an OTel traceback on every batch."""
    converted: list[str] = []
    checked = check_params(what, values, converted)
    for note in converted:
        log.warning("markov_otel: %s", note)
    return checked


def _notifiers(settings: Settings) -> list[WebhookNotifier]:
    return [WebhookNotifier(settings.webhook_url)] if settings.webhook_url else []


def _oldest(buffer: deque[Any], default: int) -> int:
    """Time of the oldest buffered record (the flusher may empty the deque meanwhile)."""
    try:
        return buffer[0]
    except IndexError:
        return default
