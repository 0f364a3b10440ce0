"""Alerts that don't flood: one notification per cooldown per condition, the crossings between
counted into the next, every crossing kept in the run; NaN does not re-arm."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from otlp_files import recording
from test_alerts import Webhook, alert_events

from markov_otel import (
    BinaryOperation,
    ConfigError,
    ExperimentAlertCondition,
    ExperimentRecorder,
    RecordingMode,
)
from markov_otel.cli.main import main
from markov_otel.recording.alerts import AlertRules
from markov_otel.recording.notices import AlertNotices, WebhookNotifier

LOSS_LOW = ExperimentAlertCondition("loss", BinaryOperation.LESS_THAN, 0.25)
T0_NS = 1_700_000_000 * 10**9  # the record time of step 0


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.close()


def noisy_loss(steps: int, seed: int = 3) -> list[float]:
    """A loss hovering around 0.25: it crosses below the threshold hundreds of times."""
    rng = random.Random(seed)
    return [0.25 + rng.gauss(0.0, 0.02) for _ in range(steps)]


def crossings(values: list[float], threshold: float = 0.25) -> list[int]:
    """Steps where `value < threshold` becomes true (false before, or the first value)."""
    steps, active = [], False
    for step, value in enumerate(values):
        hit = value < threshold
        if hit and not active:
            steps.append(step)
        active = hit
    return steps


def test_noisy_loss_notifies_once_per_cooldown_and_counts_the_rest(webhook: Webhook) -> None:
    """3,000 steps, 0.1 s apart on a fake clock, ~700 crossings, cooldown 60 s: the webhook gets
    the first crossing at once, then one message per cooldown naming the crossings held back,
    then one closing message; the messages account for every crossing exactly once."""
    clock = FakeClock()
    rules = AlertRules()
    rules.add(LOSS_LOW, "converged")
    notices = AlertNotices(60.0, name="noisy", clock=clock)
    notices.start([WebhookNotifier(webhook.url)])
    losses = noisy_loss(3000)
    for step, loss in enumerate(losses):
        clock.now = 1000.0 + step * 0.1
        rules.check({"loss": loss}, T0_NS + step * 10**8, step)
        while rules.fired:
            notices(rules.fired.popleft())
    notices.close(10.0)

    crossed = crossings(losses)
    assert len(crossed) > 500
    # Which crossings are said: the first, then the first one 60 s (600 steps) after the last said.
    said, last = [], None
    for step in crossed:
        if last is None or step - last >= 600:
            said.append(step)
            last = step
    bodies = webhook.wait_for(len(said) + 1)
    assert len(bodies) == len(said) + 1 == 6
    assert [b["alert"]["step"] for b in bodies[:-1]] == said
    assert bodies[0]["more_crossings"] == 0 and "more crossings" not in bodies[0]["text"]
    for body, previous in zip(bodies[1:-1], said, strict=False):
        held = [s for s in crossed if previous < s < body["alert"]["step"]]
        assert body["more_crossings"] == len(held)
        since = time.strftime("%H:%M:%S", time.localtime((T0_NS + held[0] * 10**8) / 1e9))
        assert body["text"].endswith(f"(and {len(held)} more crossings since {since})")
    closing = bodies[-1]
    assert closing["alert"]["step"] == crossed[-1]
    assert f"{closing['more_crossings']} more crossings since" in closing["text"]
    assert len(said) + sum(b["more_crossings"] for b in bodies) == len(crossed)


def test_zero_cooldown_notifies_every_crossing(webhook: Webhook) -> None:
    """cooldown 0: every crossing is a message, none held back, no closing message."""
    clock = FakeClock()
    rules = AlertRules()
    rules.add(LOSS_LOW, "converged")
    notices = AlertNotices(0.0, clock=clock)
    notices.start([WebhookNotifier(webhook.url)])
    losses = noisy_loss(500)
    for step, loss in enumerate(losses):
        rules.check({"loss": loss}, T0_NS + step, step)
        while rules.fired:
            notices(rules.fired.popleft())
    notices.close(10.0)
    expected = crossings(losses)
    bodies = webhook.wait_for(len(expected))
    assert [b["alert"]["step"] for b in bodies] == expected
    assert all(b["more_crossings"] == 0 for b in bodies)


def test_recorder_keeps_every_crossing_and_notifies_per_condition_cooldown(
    isolated: Path, webhook: Webhook, caplog: pytest.LogCaptureFixture
) -> None:
    """In a recorder: the run's alerts and log events hold every crossing; the webhook and the
    log warnings get the first plus one closing message for the default cooldown, and every
    crossing for a condition attached with cooldown=0."""
    recorder = ExperimentRecorder(
        "noisy", recording_mode=RecordingMode.OFFLINE, webhook_url=webhook.url
    )
    recorder.attach_alert_on(LOSS_LOW, "converged")  # the default: 60 s, longer than this run
    high = ExperimentAlertCondition("loss", BinaryOperation.GREATER_THAN, 0.3)
    recorder.attach_alert_on(high, "spike", cooldown=0)
    losses = noisy_loss(3000)
    with caplog.at_level("WARNING", logger="markov_otel"), recorder:
        for loss in losses:
            recorder.add_record({"loss": loss})
    low_steps = crossings(losses)
    high_steps = crossings([-v for v in losses], -0.3)
    alerts = recording(isolated / recorder.recording_id)["alerts"]
    assert [a["step"] for a in alerts if a["text"] == "converged"] == low_steps
    assert [a["step"] for a in alerts if a["text"] == "spike"] == high_steps
    assert len(alert_events(isolated / recorder.recording_id)) == len(low_steps) + len(high_steps)
    bodies = webhook.wait_for(2 + len(high_steps))
    assert len(bodies) == 2 + len(high_steps)
    low = [b for b in bodies if b["alert"]["text"] == "converged"]
    assert [b["alert"]["step"] for b in low] == [low_steps[0], low_steps[-1]]
    assert low[1]["more_crossings"] == len(low_steps) - 1
    warned = [r.getMessage() for r in caplog.records if "markov alert" in r.getMessage()]
    assert sum("converged" in m for m in warned) == 2
    assert sum("spike" in m for m in warned) == len(high_steps)


@pytest.mark.parametrize("how", ["env", "mkv"])
def test_alert_cooldown_from_config(
    how: str, webhook: Webhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MARKOV_ALERT_COOLDOWN=0 or `mkv config set alert_cooldown 0` notifies every crossing."""
    if how == "env":
        monkeypatch.setenv("MARKOV_ALERT_COOLDOWN", "0")
    else:
        assert main(["config", "set", "alert_cooldown", "0"]) == 0
    recorder = ExperimentRecorder(
        "cfg", recording_mode=RecordingMode.OFFLINE, webhook_url=webhook.url
    )
    recorder.attach_alert_on(LOSS_LOW, "converged")
    losses = [0.1, 0.5, 0.1, 0.5, 0.1]
    with recorder:
        for loss in losses:
            recorder.add_record({"loss": loss})
    assert [b["alert"]["step"] for b in webhook.wait_for(3)] == [0, 2, 4]


def test_bad_cooldowns_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """A negative or non-numeric cooldown is a ConfigError naming it; `mkv config set` refuses
    it in one line and writes nothing."""
    recorder = ExperimentRecorder("bad", recording_mode=RecordingMode.OFFLINE)
    for value in (-1, "soon", True, float("nan")):
        with pytest.raises(ConfigError, match="cooldown"):
            recorder.attach_alert_on(LOSS_LOW, "x", cooldown=value)  # type: ignore[arg-type]
    assert main(["config", "set", "alert_cooldown", "soon"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'soon'" in err


def test_nan_neither_fires_nor_rearms(isolated: Path) -> None:
    """loss < 0.25 over 0.1, NaN, 0.1, 0.5, 0.1: fires at steps 0 and 4 only (before, NaN
    counted as "condition false" and re-armed it, firing at step 2 too)."""
    recorder = ExperimentRecorder("nan", recording_mode=RecordingMode.OFFLINE)
    recorder.attach_alert_on(LOSS_LOW, "low", cooldown=0)
    with recorder:
        for loss in (0.1, float("nan"), 0.1, 0.5, 0.1):
            recorder.add_record({"loss": loss})
    assert [a["step"] for a in recording(isolated / recorder.recording_id)["alerts"]] == [0, 4]
