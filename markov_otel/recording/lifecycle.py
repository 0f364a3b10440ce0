"""A recorder's life: created, registered, running, stopped; and the process events on the way.

`Lifecycle` is a part of ExperimentRecorder (a mixin): start() opens the experiment span and
starts the flusher, the sampler, the senders and the environment's capture; stop() drains them
within sync_data_timeout, holding Ctrl-C and SIGTERM until the data is on disk; `process.py`
stops a running recorder at exit, marks it terminated on SIGTERM and disowns its copy in a
forked child.
"""

from __future__ import annotations

import enum
import logging
import os
import signal
import sys
import threading
import time
from collections import deque
from typing import Any, cast

from opentelemetry.trace import Status, StatusCode

from markov_otel import process
from markov_otel.config import Settings
from markov_otel.errors import RecorderStateError
from markov_otel.otel.providers import Telemetry, otlp_configured
from markov_otel.otel.series import SeriesTable
from markov_otel.recording import distributed
from markov_otel.recording.artifacts import ArtifactCopier
from markov_otel.recording.background import Background
from markov_otel.recording.environment import RecordedEnvironment
from markov_otel.recording.notices import AlertNotices, WebhookNotifier
from markov_otel.recording.system_metrics import SystemSampler
from markov_otel.shipping.flusher import Flusher
from markov_otel.shipping.sender import Sender
from markov_otel.shipping.transport import Target

log = logging.getLogger("markov_otel")


ARTIFACT_RESERVE = 5.0
"""Seconds of stop()'s deadline (or half of what is left, if less) that pending artifact copies
leave to the points' final drain and sending: a copy resumes from its source, points do not."""


class State(enum.Enum):
    CREATED, REGISTERED, RUNNING, STOPPED = range(4)


class Lifecycle(Background, RecordedEnvironment):
    """start(), stop() and what happens between them to the process."""

    # Given by the recorder (the hot path).
    _others: deque[Any]
    _series: SeriesTable

    def _prepare_lifecycle(self) -> None:
        """The constructor's part: nothing started yet."""
        self._state = State.CREATED
        self._lock = threading.RLock()
        self._notices = AlertNotices(self._settings.alert_cooldown, name=self._name)
        self._sender: Sender | None = None
        self._mirror: Sender | None = None  # exact points to the user's collector (export_points)
        self._sampler: SystemSampler | None = None
        self._artifacts: ArtifactCopier | None = None  # made by the first add_artifact
        self._env_thread: threading.Thread | None = None
        self._exit_status: str | None = None  # set by SIGTERM: the run was terminated
        self._failure: BaseException | None = None  # what ended `with recorder:` with failed
        self._forked_from: int | None = None  # set in a forked child: the recording process
        self._hurried = False  # a signal came during stop(): stop waiting for the network

    def _register_once(self) -> None:
        with self._lock:
            if self._state is not State.CREATED:
                return
            self._register()
            self._state = State.REGISTERED

    # -- start ---------------------------------------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            self._check_startable()
            self._register_once()
            if self._settings.export_points and otlp_configured(self._settings):
                self._mirror = Sender(self._spool, Target.otlp_points(self._settings), self._queue)
            self._status = "running"
            self._open_telemetry()
            self._flusher = self._make_flusher()
            # A resumed recording keeps its first start: its duration covers every piece.
            self._started_at = self._started_at or time.time()
            self._save()
            self._flusher.start()
            self._start_sampler()
            for sender in self._senders():
                sender.start()
            self._running = True
            self._state = State.RUNNING
            process.track(self._tracked())
            self._lifecycle("started")
        if self._settings.capture_environment and (self._launch is None or self._launch.owner):
            self._env_thread = threading.Thread(
                target=self._capture_environment, name="markov-env", daemon=True
            )
            self._env_thread.start()

    def _check_startable(self) -> None:
        if self._state is State.RUNNING:
            raise RecorderStateError(
                f"recorder {self._name!r} is already started; call stop() before starting "
                "again, or use a new ExperimentRecorder"
            )
        if self._state is State.STOPPED:
            raise RecorderStateError(
                f"recorder {self._name!r} was stopped; create a new ExperimentRecorder "
                f"(pass recording_id={self._recording_id!r} to add to the same recording)"
            )

    def _open_telemetry(self) -> None:
        """The private OTel providers, the experiment span and the alert notices."""
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

    def _make_flusher(self) -> Flusher:
        return Flusher(
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

    # -- stop ----------------------------------------------------------------------------------

    def _stop(self, status: str) -> None:
        with self._lock:
            if self._state is State.STOPPED:
                return
            if self._state is not State.RUNNING:
                raise RecorderStateError(
                    f"recorder {self._name!r} was never started; call start() (or use "
                    "`with recorder:`) before stop()"
                )
            deadline = time.monotonic() + self._queue["sync_data_timeout"]
            self._running = False
            self._state = State.STOPPED
            process.untrack(self._tracked())
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
        self._close_run(status)
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

    def _close_run(self, status: str) -> None:
        """The final status and end time, said by the lifecycle event and the closed span."""
        self._status = status
        self._ended_at = time.time()
        if status == "failed" and self._launch is not None:
            self._name_failed_rank(self._launch)
        self._resource_changed()
        self._lifecycle(status)
        self._spans.end(Status(StatusCode.OK if status == "finished" else StatusCode.ERROR))

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

    def _spool_sync(self) -> None:
        try:
            self._spool.sync()
        except OSError as exc:
            log.warning("markov_otel: fsync of %s failed: %s", self._spool.dir, exc)

    def _lifecycle(self, step: str) -> None:
        self._telemetry.event(
            "markov.lifecycle",
            {"markov.lifecycle.step": step},
            body=f"recording {self._recording_id} {step}",
            span=self._span,
        )

    # -- the process (process.py) --------------------------------------------------------------

    def _tracked(self) -> process.Tracked:
        """This part is only ever an ExperimentRecorder, whose recording_id and stop() (in
        recorder.py) process.py calls at exit."""
        return cast("process.Tracked", self)

    def _note_signal(self, status: str) -> None:
        self._exit_status = status

    def _disown_after_fork(self, parent_pid: int) -> None:
        """In a forked child: the parent owns (and writes) the buffer; this copy records nothing."""
        self._running = False
        self._state = State.STOPPED
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
        if self._state is State.STOPPED:
            return RecorderStateError(
                f"add_record after stop() on recorder {self._name!r}; record before stop(), or "
                "create a new ExperimentRecorder"
            )
        return RecorderStateError(
            f"add_record before start() on recorder {self._name!r}; call recorder.start() or "
            "use `with recorder:`"
        )


def _notifiers(settings: Settings) -> list[WebhookNotifier]:
    return [WebhookNotifier(settings.webhook_url)] if settings.webhook_url else []
