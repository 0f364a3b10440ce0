"""The recording an integration writes to: a recorder given by the user or built from keyword
arguments, started on first use, and values made safe for a training loop."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from markov_otel.errors import ConfigError, RecorderStateError
from markov_otel.integrations.params import plain_params
from markov_otel.recording.recorder import ExperimentRecorder
from markov_otel.recording.summary import ExperimentSummary
from markov_otel.recording.values import to_number
from markov_otel.rules import check_key
from markov_otel.weather import SayOnce

log = logging.getLogger("markov_otel.integrations")

SUMMARY_NAMES = {
    "add_training_loss": ("train_loss", "train/loss", "training_loss", "loss"),
    "add_validation_loss": ("val_loss", "val/loss", "validation_loss", "valid_loss", "eval_loss"),
    "add_training_accuracy": ("train_acc", "train_accuracy", "train/acc", "train/accuracy"),
    "add_validation_accuracy": (
        "val_acc",
        "val_accuracy",
        "val/acc",
        "val/accuracy",
        "eval_accuracy",
    ),
}
"""Summary fields and the logged names (first found wins) that fill them."""


def summarise(summary: ExperimentSummary, last: Mapping[str, float | int | bool]) -> None:
    """The summary from each key's last logged value: the loss and accuracy fields where a
    name in SUMMARY_NAMES was logged (a Lightning ``<name>_epoch`` mean before its step value),
    and every validation key (``val*``, ``eval*``) under its own name."""
    named = {k.removesuffix("_epoch"): v for k, v in last.items() if k.endswith("_epoch")}
    named = {**last, **named}
    for method, names in SUMMARY_NAMES.items():
        found = next((named[n] for n in names if n in named), None)
        if found is not None:
            getattr(summary, method)(found)
    for key, value in last.items():
        if key.startswith(("val", "eval")):
            summary.add(key, value)


def missing_framework(framework: str, extra: str, exc: ImportError) -> ImportError:
    """The ImportError an integration module raises when its framework is not installed."""
    error = ImportError(
        f"markov_otel.integrations.{extra} needs {framework}, which cannot be imported "
        f"({exc}); install it with: pip install 'markov-otel[{extra}]'"
    )
    error.name = exc.name
    return error


class Recording:
    """One integration's recorder.

    Given (``recorder=``): the user's. It is started on first use if it is not running yet and
    never stopped here. Built (from ``options``, the ExperimentRecorder arguments): owned. It is
    started on first use, stopped by `finish()`, and used again after that it continues the same
    recording (a new recorder with the same ``recording_id``, as the recorder documents).
    """

    def __init__(
        self, framework: str, recorder: ExperimentRecorder | None, options: dict[str, Any]
    ) -> None:
        self.framework = framework
        if recorder is not None:
            if options:
                raise ConfigError(
                    f"pass either recorder= or the ExperimentRecorder arguments "
                    f"({', '.join(sorted(options))}), not both: give those to the "
                    "ExperimentRecorder you pass"
                )
            if not isinstance(recorder, ExperimentRecorder):
                raise ConfigError(
                    f"recorder={recorder!r} must be a markov_otel.ExperimentRecorder, "
                    "e.g. recorder=ExperimentRecorder(name='my-run')"
                )
        self.owned = recorder is None
        self._options = {"name": framework, **options}
        # Built now, so a bad argument raises here rather than once training has started.
        self._recorder = recorder if recorder is not None else ExperimentRecorder(**self._options)
        self._started = False
        self._finished = False
        self._skipped = SayOnce(log)

    @property
    def recorder(self) -> ExperimentRecorder:
        """The recorder, not necessarily started (`running()` starts it)."""
        return self._recorder

    def running(self) -> ExperimentRecorder:
        """The recorder, started if this integration has not started it yet."""
        if self._finished:
            options = {**self._options, "recording_id": self._recorder.recording_id}
            self._recorder = ExperimentRecorder(**options)
            self._started = self._finished = False
        if not self._started:
            self._started = True
            self._start()
        return self._recorder

    def _start(self) -> None:
        try:
            self._recorder.start()
        except RecorderStateError:
            if self.owned:
                raise
            # The user's recorder is running already (e.g. inside `with recorder:`). If it was
            # stopped instead, the first add_record says so, naming the fix.

    def record(self, values: Mapping[str, Any], step: int | None = None) -> None:
        """Record the numbers among `values` at `step`; other values are skipped, said once."""
        numbers = self.numbers(values)
        if numbers:
            self.running().add_record(numbers, step=step)

    def numbers(self, values: Mapping[str, Any]) -> dict[str, float | int | bool]:
        """The entries of `values` that are numbers (tensors and numpy scalars converted)."""
        out: dict[str, float | int | bool] = {}
        for key, value in values.items():
            try:
                out[check_key(key)] = to_number(key, value)
            except ConfigError as exc:
                self._skipped.say(
                    f"skip {key!r}", logging.INFO,
                    "markov_otel: %s logged %r, which is not recorded (said once for this key): %s",
                    self.framework, key, exc,
                )  # fmt: skip
        return out

    def add_hyper_parameters(self, params: Any) -> None:
        """Hyperparameters from a dict, Namespace or dataclass, converted to plain values."""
        plain = plain_params(params)
        if plain:
            self.running().add_hyper_parameters(plain)

    def finish(self, status: str = "finished") -> None:
        """Stop an owned recorder with `status`; a given recorder is left to its owner."""
        if self.owned and self._started and not self._finished:
            self._finished = True
            self._recorder.stop(status=status)
