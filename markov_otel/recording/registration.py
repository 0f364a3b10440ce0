"""What a recording says of itself, and where: recording.json in the run dir, the backend's
registration and PATCH bodies, and the resource attributes every batch carries.

`Registration` is a part of ExperimentRecorder (a mixin), under its lifecycle: it holds the
recording's description (name, notes, model class, metadata, hyperparameters, summary, status,
start and end), registers it with the run dir and, online, the backend, and goes on from what
the run dir or the backend already holds when a recording is resumed.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from markov_otel.config import RecordingMode, Settings, redact_url
from markov_otel.otel.encoding import attributes_json
from markov_otel.otel.providers import AggregatedView
from markov_otel.otel.resource import experiment_attributes
from markov_otel.recording import distributed
from markov_otel.recording.arguments import ModelClass, model_class_value, note_recording_locally
from markov_otel.recording.steps import Steps
from markov_otel.recording.summary import ExperimentSummary
from markov_otel.rules import MAX_TEXT_BYTES, check_params, check_text, flatten_params
from markov_otel.shipping.sender import Sender
from markov_otel.shipping.transport import Target, patch_body, registration_body
from markov_otel.weather import SayOnce

if TYPE_CHECKING:
    from markov_otel.shipping.spool import Spool

log = logging.getLogger("markov_otel")


class Registration(Steps):
    """The description of the recording, and where it is registered."""

    # Given by the recorder.
    _recording_id: str
    _model_id: str
    _settings: Settings
    _queue: dict[str, Any]
    _spool: Spool
    _launch: distributed.Launch | None
    _view: AggregatedView
    _lock: threading.RLock
    _sender: Sender | None

    def _describe(
        self,
        name: str,
        project_id: str,
        notes: str | None,
        dataset_id: str,
        model_class: ModelClass,
        metadata: dict[str, Any] | None,
    ) -> None:
        """The constructor's description of the recording, each value checked (ConfigError)."""
        self._name = check_text("name", name)
        self._project_id = check_text("project_id", str(project_id or ""))
        self._notes = None if notes is None else check_text("notes", notes, MAX_TEXT_BYTES)
        self._dataset_id = check_text("dataset_id", str(dataset_id or ""))
        self._model_class = model_class_value(model_class)
        self._hparams: dict[str, Any] = {}
        self._metadata = checked_params("metadata", metadata)
        flatten_params(self._metadata)
        self._experiment_url: str | None = None
        self._resource_version = 0
        self._resource_cache: tuple[int, str] = (-1, "")
        self._summary = ExperimentSummary(on_change=self._resource_changed)
        self._alert_log: list[dict[str, Any]] = []
        self._status = "created"
        self._started_at: float | None = None
        self._ended_at: float | None = None
        self._saved_at = 0.0  # monotonic time of the last recording.json save
        self._trouble = SayOnce(log)

    def _add_hparams(self, hyper_parameters: dict[str, Any]) -> None:
        """add_hyper_parameters: merged into the resource attributes (`markov.hparam.<k>`)."""
        # Checked and copied now (objects become their str()): what the flusher encodes later
        # can no longer fail, nor change when the caller mutates its dict.
        values = checked_params("hyper_parameters", hyper_parameters)
        with self._lock:
            flatten_params({**self._hparams, **values})  # a key given twice is refused now
            self._hparams.update(values)
        self._resource_changed()

    # -- resuming ------------------------------------------------------------------------------

    def _go_on(self, given_id: str | None) -> None:
        """The constructor's last look: does this recording go on from an earlier piece?"""
        shared = self._recording_id if self._launch else None  # a restarted job goes on
        on_disk = self._resume_if_existing(given_id or shared)
        # recording_id= adds to a recording that may have finished: the backend only lets an
        # explicit PATCH (not a batch) turn a finished recording back to running.
        self._resuming = bool(given_id) or on_disk
        # recording_id= with a fresh run dir (another machine): the backend knows where it was.
        self._ask_backend = bool(given_id) and not on_disk
        self._answer: Mapping[str, Any] | None = None  # the backend's registration answer

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

    # -- registering ---------------------------------------------------------------------------

    def _register(self) -> None:
        """register()'s work: the run dir and recording.json, and ONLINE the backend (a sender
        that registers, retried in the background: never raises for weather)."""
        self._spool.create()
        self._status = "registered"
        self._save()
        note_recording_locally(self._settings, self._recording_id, self._spool.dir)
        if self._settings.mode is not RecordingMode.ONLINE:
            return
        self._sender = Sender(
            self._spool,
            distributed.markov_target(Target.markov(self._settings), self._info()),
            self._queue,
            self._view,
            on_registered=self._registered,
        )
        self._sender.register(registration_body(self._info()))
        if self._ask_backend:
            self._go_on_from_backend()
        if self._resuming:
            self._sender.update_recording({"status": "running"})

    def _registered(self, answer: Mapping[str, Any]) -> None:
        self._experiment_url = answer.get("experiment_url") or self._experiment_url
        self._answer = answer

    def _patch_body(self) -> dict[str, Any]:
        return patch_body(self._info())

    # -- what it says of itself ----------------------------------------------------------------

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

    def _resource_changed(self) -> None:
        self._resource_version += 1

    def _resource_json(self) -> str:
        """The resource attributes of the next batch, encoded once per change (the flusher's)."""
        version = self._resource_version
        if self._resource_cache[0] != version:
            attributes = experiment_attributes(self._resource_info())
            self._resource_cache = (version, attributes_json(attributes))
        return self._resource_cache[1]

    def _resource_info(self) -> Mapping[str, Any]:
        """What batches say of the recording (a rank N > 0 leaves status & co. to rank 0)."""
        return distributed.resource_info(self._info(), self._launch)


def checked_params(what: str, values: Any) -> dict[str, Any]:
    """rules.check_params, and what it converted with a loss (an int past int64) said once,
    here at the call, instead of an OTel traceback on every batch."""
    converted: list[str] = []
    checked = check_params(what, values, converted)
    for note in converted:
        log.warning("markov_otel: %s", note)
    return checked


def _unix_seconds(iso: Any) -> float | None:
    """A backend time (ISO 8601) as Unix seconds; None if it is not one."""
    try:
        return datetime.fromisoformat(str(iso).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
