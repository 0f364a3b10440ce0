"""Framework integrations: one module per framework, each importing its framework only when the
module itself is imported (``import markov_otel.integrations`` imports none of them).

- ``markov_otel.integrations.lightning``: ``MarkovLogger``, a Lightning ``Logger``
  (``pip install 'markov-otel[lightning]'``);
- ``markov_otel.integrations.transformers``: ``MarkovTrainerCallback``, a ``TrainerCallback``
  (``markov-otel[transformers]``);
- ``markov_otel.integrations.keras``: ``MarkovKerasCallback``, a Keras 3 ``Callback``
  (``markov-otel[keras]``, plus the Keras backend you use);
- ``markov_otel.integrations.xgboost``: ``MarkovXGBoostCallback``, a ``TrainingCallback``
  (``markov-otel[xgboost]``);
- ``markov_otel.integrations.lightgbm``: ``MarkovLightGBMCallback``, a LightGBM callback
  (``markov-otel[lightgbm]``);
- ``markov_otel.integrations.optuna``: ``MarkovOptunaCallback``, each trial of a study one
  recording (``markov-otel[optuna]``);
- ``markov_otel.integrations.accelerate``: ``MarkovTracker``, a tracker for
  ``Accelerator(log_with=...)`` (``markov-otel[accelerate]``).

Every one takes either ``recorder=``, an ``ExperimentRecorder`` you built (started if it is not
running, never stopped: that stays yours, e.g. ``with recorder:``), or the ``ExperimentRecorder``
arguments themselves (``name=``, ``project_id=``, ``hyper_parameters=``, ``recording_mode=`` and
the keyword extras): then the integration owns the recorder, starts it when training starts and
stops it when training ends, with the status the framework reports. Used again after that (a
``trainer.test()`` after ``fit()``), it adds to the same recording. Logged values that are not
numbers (text) are skipped and said once per key at INFO; nothing raises into the training loop
for them.
"""

from __future__ import annotations

__all__: list[str] = []
