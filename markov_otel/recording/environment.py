"""A recording's environment: the packages, Python and git state captured into the run (and the
backend), and the requirements.txt, virtualenv or conda environment rebuilt from them.

`RecordedEnvironment` is a part of ExperimentRecorder (a mixin): the recorder gives it the run
dir (`_spool`), its id and, online, its sender.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from markov_otel.environments import capture, rebuild
from markov_otel.shipping.spool import read_json, write_json_atomic

if TYPE_CHECKING:
    from markov_otel.shipping.sender import Sender
    from markov_otel.shipping.spool import Spool

log = logging.getLogger("markov_otel")


class RecordedEnvironment:
    """The environment methods of ExperimentRecorder."""

    _spool: Spool
    _recording_id: str
    _sender: Sender | None

    def upsert_package_requirements(self) -> None:
        """Capture the installed packages, Python and git state into the run (and the backend)."""
        self._store_environment(capture.capture())

    def create_experiment_requirements_file(self, requirement_file_path: str) -> None:
        """Write the recorded requirements.txt at that path (a directory gets one inside)."""
        capture.write_requirements_file(
            self._environment(), requirement_file_path, recording_id=self._recording_id
        )

    def create_experiment_virtualenv(self, path: str | None = None) -> None:
        """Build a virtualenv with the recorded packages (default ./<recording_id>_venv)."""
        target = path or f"{self._recording_id}_venv"
        report = rebuild.create_virtualenv(self._environment(), target, progress=log.info)
        log.info("%s", report.message)

    def create_experiment_conda_environment(self, path: str | None = None) -> None:
        """Build a conda environment with the recorded Python and packages."""
        target = path or f"{self._recording_id}_conda_env"
        rebuild.create_conda_environment(self._environment(), target, progress=log.info)

    def _capture_environment(self) -> None:
        try:
            self.upsert_package_requirements()
        except Exception as exc:  # capture is a convenience: never fail the run for it
            log.warning("markov_otel: environment capture failed: %s", exc)

    def _store_environment(self, env: dict[str, Any]) -> None:
        try:
            write_json_atomic(self._spool.dir / "environment.json", env)
            capture.write_requirements_file(
                env, self._spool.dir / "requirements.txt", recording_id=self._recording_id
            )
        except OSError as exc:  # disk trouble is weather: say so, never raise into training
            log.warning("markov_otel: cannot write the environment to %s: %s", self._spool.dir, exc)
        if self._sender is not None:
            self._sender.update_recording({"requirements": env})

    def _environment(self) -> dict[str, Any]:
        env = read_json(self._spool.dir / "environment.json")
        if not env:
            env = capture.capture()
            if self._spool.dir.exists():
                self._store_environment(env)
        return env
