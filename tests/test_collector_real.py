"""The real collector in the loop: markov-otelcol (collector-config/build.sh) running the shipped
collector-config/otel-collector.yaml between recorders, offline run dirs, an app's own SDK, the
real backend and Debian's Prometheus. Every test counts points.

Skips without the binary (`bash collector-config/build.sh`), fails without it in CI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from backend_fixture import Backend
from collector_fixture import CONFIG, FEATURE_GATES, Collector, free_port, otelcol_binary, wait_for
from otlp_files import lines, points
from test_collector_config import dashboard_prometheus_queries

from markov_otel import ExperimentRecorder, RecordingMode

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
SHIPPED_CONFIGS = [CONFIG]
KEYS = ("loss", "acc")
SIGNALS = ("metrics", "traces", "logs")


class DuplicateStored(AssertionError):
    """A point the backend holds more than once (the collector delivers at least once)."""


Points = Counter[tuple[str, int]]


def stored(backend: Backend, recording_id: str, keys: tuple[str, ...] = KEYS) -> Points:
    """How many times the backend holds each (key, step) of a recording."""
    return Counter((key, row["step"]) for key in keys for row in backend.records(recording_id, key))


def on_disk(run_dir: Path) -> Points:
    """Each (key, step) of the run dir's whole metrics lines, counted."""
    return Counter((p.key, p.step) for p in points(run_dir))


def assert_once(got: Points, want: Points, what: str) -> None:
    """`got` holds every point of `want` (else AssertionError: lost), each once (else
    DuplicateStored), and nothing else."""
    missing = want - got
    extra = set(got) - set(want)
    assert not missing, f"{what}: {sum(missing.values())} points never stored, e.g. {min(missing)}"
    assert not extra, f"{what}: {len(extra)} points stored that are not in it, e.g. {min(extra)}"
    twice = {p: n for p, n in got.items() if n > 1}
    if twice:
        raise DuplicateStored(f"{what}: {len(twice)} points stored more than once: {min(twice)}")


def settle(backend: Backend, collector: Collector, runs: dict[str, Points]) -> dict[str, Points]:
    """Wait until every point of `runs` is stored and the collector's queue is empty with nothing
    arriving any more (two reads a second apart agree); the stored counts then."""

    def arrived() -> dict[str, Points] | None:
        got = {rid: stored(backend, rid, _keys(want)) for rid, want in runs.items()}
        return got if all(not (want - got[rid]) for rid, want in runs.items()) else None

    wait_for("every point at the backend", arrived, 90)
    last: dict[str, Points] = {}

    def quiet() -> dict[str, Points] | None:
        nonlocal last
        if collector.metric("otelcol_exporter_queue_size", exporter="otlp_http/markov") > 0:
            return None
        now = {rid: stored(backend, rid, _keys(want)) for rid, want in runs.items()}
        same, last = now == last, now
        time.sleep(1.0)  # the interval between the two reads that must agree
        return now if same else None

    return wait_for("the collector to go quiet", quiet, 60)


def _keys(want: Points) -> tuple[str, ...]:
    return tuple(sorted({key for key, _ in want}))


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    path = tmp_path / "markov-runs"
    path.mkdir()
    return path


@pytest.fixture
def collector(tmp_path: Path, backend: Backend, runs_dir: Path) -> Iterator[Collector]:
    """The shipped config on the real binary, sending to the test backend, replaying runs_dir."""
    running = Collector(
        tmp_path / "collector", backend_url=backend.url, token=backend.token, runs_dir=runs_dir
    )
    try:
        yield running
    finally:
        running.stop()


def offline_recorder(name: str, runs: Path | None = None, **options: Any) -> ExperimentRecorder:
    settings: dict[str, Any] = {"batch_size": 200, "batch_processing_interval": 0.05, **options}
    if runs is not None:
        settings["markov_dir"] = str(runs)
    return ExperimentRecorder(name, recording_mode=RecordingMode.OFFLINE, **settings)


def record(recorder: ExperimentRecorder, start: int, stop: int) -> None:
    for i in range(start, stop):
        recorder.add_record({"loss": 1.0 / (i + 1), "acc": i})


# --- every shipped config: validate, start ---------------------------------------------------


@pytest.mark.parametrize("config", SHIPPED_CONFIGS, ids=lambda p: p.name)
def test_otelcol_validate_accepts_every_shipped_config_with_compose_defaults(config: Path) -> None:
    """`markov-otelcol validate` passes each shipped config as compose runs it (no variables set:
    the defaults are the compose values)."""
    result = subprocess.run(
        [str(otelcol_binary()), "validate", f"--config={config}", FEATURE_GATES],
        capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": os.environ.get("PATH", ""), "MARKOV_API_KEY": "k"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("config", SHIPPED_CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_starts_healthy_and_stops_cleanly(
    config: Path, tmp_path: Path, backend: Backend, runs_dir: Path
) -> None:
    """Each shipped config starts (health check 200, every port bound) with no error and no
    deprecated component name logged, and exits 0 on SIGTERM."""
    running = Collector(
        tmp_path / "c", backend_url=backend.url, token=backend.token, runs_dir=runs_dir,
        config=config,
    )  # fmt: skip
    try:
        scrape = requests.get(f"http://{running.prometheus_target}/metrics", timeout=10)
        assert scrape.status_code == 200
        answer = requests.post(f"{running.otlp_http}/v1/metrics", json={}, timeout=10)
        assert answer.status_code == 200, answer.text
        assert running.metric("otelcol_process_uptime") > 0
    finally:
        code = running.stop()
    log = running.log()
    assert code == 0, log
    assert not re.search(r"\terror\t", log), log
    assert "deprecated" not in log, log


# --- the recorder -> the collector -> the backend and Prometheus ------------------------------


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_recorder_exact_points_reach_the_backend_once_through_the_collector(
    protocol: str, collector: Collector, backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MARKOV_EXPORT_POINTS=1 over OTLP/HTTP and over OTLP/gRPC: each of 2 x 3000 exact points
    is stored once, and none reaches the Prometheus exporter (no markov_step label there)."""
    grpc = protocol == "grpc"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    monkeypatch.setenv(
        "OTEL_EXPORTER_OTLP_ENDPOINT", collector.otlp_grpc if grpc else collector.otlp_http
    )
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "500")
    monkeypatch.setenv("MARKOV_EXPORT_POINTS", "1")
    recorder = offline_recorder(f"via-{protocol}")
    with recorder:
        record(recorder, 0, 3000)
    want = Counter((key, step) for key in KEYS for step in range(3000))
    got = settle(backend, collector, {recorder.recording_id: want})
    assert_once(got[recorder.recording_id], want, f"recorder over {protocol}")
    received = collector.metric(
        "otelcol_receiver_accepted_metric_points", transport=protocol.split("/")[0]
    )
    assert received >= 6000, received  # control: they came by this protocol
    assert on_disk(recorder.run_dir) == want  # control: the run dir holds the same points
    exposed = requests.get(f"http://{collector.prometheus_target}/metrics", timeout=10).text
    assert f'markov_recording_id="{recorder.recording_id}"' in exposed
    assert "markov_step" not in exposed


def _prometheus(tmp_path: Path, target: str) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("prometheus")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Debian's prometheus is missing in CI (.ci/run installs it)")
        pytest.skip("Debian's prometheus is not installed (.ci/run installs it)")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n  - job_name: otel-collector\n    honor_labels: true\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )
    web = f"127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address={web}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def ready() -> bool:
        try:
            return requests.get(f"http://{web}/-/ready", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_for("Prometheus to be ready", ready, 60)
    except AssertionError:
        process.kill()
        raise
    return process, f"http://{web}"


def grafana_query(base: str, expr: str, variables: dict[str, str]) -> list[Any]:
    """What Grafana would get for one dashboard query: `label_values(sel, label)` through the
    label values API, any other expression through an instant query; `$var` substituted."""
    for name, value in variables.items():
        expr = expr.replace(f"${name}", value)
    lv = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\)\s*", expr, re.S)
    if lv:
        answer = requests.get(
            f"{base}/api/v1/label/{lv.group(2)}/values",
            params={"match[]": lv.group(1)}, timeout=5,
        )  # fmt: skip
    else:
        answer = requests.get(f"{base}/api/v1/query", params={"query": expr}, timeout=5)
    answer.raise_for_status()
    data = answer.json()["data"]
    return list(data if lv else data["result"])


def test_aggregated_view_over_grpc_reaches_prometheus_and_every_dashboard_query_has_data(
    collector: Collector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recorder -> OTLP/gRPC -> the collector's Prometheus exporter -> Debian's Prometheus: every
    PromQL query of the Grafana dashboard returns data for the recording."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.otlp_grpc)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "500")
    recorder = offline_recorder("via-grpc", project_id="vision")
    recorder.start()
    try:
        prometheus, base = _prometheus(tmp_path, collector.prometheus_target)
    except BaseException:  # skipped or failed: the recorder still stops
        recorder.stop()
        raise
    try:
        recorder.summary.add_training_loss(0.25)
        variables = {
            "recording": recorder.recording_id,
            "key": "loss",
            "project": "vision",
            "name": "via-grpc",
        }
        queries = dashboard_prometheus_queries()
        assert len(queries) >= 10  # control: the dashboard's queries were found
        step, empty = 0, list(queries)

        def all_answer() -> bool:
            nonlocal step, empty
            record(recorder, step, step + 50)  # keep the counters moving between scrapes
            step += 50
            empty = [q for q in queries if not grafana_query(base, q, variables)]
            return not empty

        try:
            wait_for("every dashboard query to return data", all_answer, 90)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; still empty: {empty}") from None
        last = grafana_query(
            base, 'markov_record_last{markov_recording_id="$recording", markov_key="acc"}',
            variables,
        )  # fmt: skip
        assert len(last) == 1 and last[0]["metric"]["markov_recording_name"] == "via-grpc"
    finally:
        prometheus.terminate()
        prometheus.wait(10)
        recorder.stop()


# --- offline run dirs replayed ----------------------------------------------------------------


def torn_run(runs: Path) -> tuple[str, Path, bytes]:
    """A recorder in a child process, SIGKILLed while recording, its last line torn
    (tear_last_line), then moved into `runs`: (recording id, run dir, the torn line's rest).
    It records and is torn elsewhere (`runs`' sibling "staging"): a collector replaying `runs`
    could read the last line whole before the tear and store points the torn file lacks."""
    staging = runs.parent / "staging"
    staging.mkdir(exist_ok=True)
    recording_id = killed_run(staging)
    rest = tear_last_line(staging / recording_id)
    return recording_id, (staging / recording_id).rename(runs / recording_id), rest


def killed_run(runs: Path) -> str:
    """A recorder in a child process, SIGKILLed while recording into `runs`; its id."""
    env = {**os.environ, "MARKOV_DIR": str(runs)}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), env.get("PYTHONPATH", "")])
    child = subprocess.Popen(
        [sys.executable, str(HERE / "recording_child.py"), "kill9", "2000"],
        stdout=subprocess.PIPE, env=env, text=True,
    )  # fmt: skip
    assert child.stdout is not None
    recording_id = child.stdout.readline().split()[1]
    for line in child.stdout:  # recording in its tight loop once it says progress
        if line.startswith("progress"):
            break
    else:
        raise AssertionError(f"the recording child exited with {child.wait(10)} before recording")
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    return recording_id


def tear_last_line(run_dir: Path) -> bytes:
    """Leave the metrics file ending in the first half of its last whole line, as a crash in the
    middle of a write leaves it (any tail the kill left is cut first); the rest, to append."""
    path = run_dir / "metrics.jsonl"
    data = path.read_bytes()
    data = data[: data.rfind(b"\n") + 1]  # whole lines only
    last_start = data.rfind(b"\n", 0, len(data) - 1) + 1
    last = data[last_start:]
    half = len(last) // 2
    path.write_bytes(data[:last_start] + last[:half])
    return last[half:]


def test_replayed_run_dirs_store_every_whole_line_once_and_a_torn_line_only_when_whole(
    backend: Backend, collector: Collector, runs_dir: Path
) -> None:
    """Three run dirs (finished, still being written, torn by kill -9) replayed by the collector:
    every whole line's points stored once, the torn line's none, then all once it is whole."""
    finished = offline_recorder("finished", runs_dir)
    with finished:
        record(finished, 0, 1500)
    growing = offline_recorder("growing", runs_dir)
    growing.start()
    record(growing, 0, 500)
    torn_id, torn_dir, rest = torn_run(runs_dir)
    whole_torn = on_disk(torn_dir)
    assert whole_torn and sum(whole_torn.values()) < 2 * 2000 * 10  # control: a real run, torn

    wait_for("the growing run's first lines", lambda: on_disk(growing.run_dir), 30)
    record(growing, 500, 1000)
    growing.stop()
    runs = {
        finished.recording_id: on_disk(finished.run_dir),
        growing.recording_id: on_disk(growing.run_dir),
        torn_id: whole_torn,
    }
    assert sum(runs[finished.recording_id].values()) == 3000
    assert sum(runs[growing.recording_id].values()) == 2000
    got = settle(backend, collector, runs)
    for rid, want in runs.items():
        assert_once(got[rid], want, rid)

    with (torn_dir / "metrics.jsonl").open("ab") as f:
        f.write(rest)  # the torn line is whole now
    made_whole = on_disk(torn_dir)
    assert sum(made_whole.values()) > sum(whole_torn.values())
    got = settle(backend, collector, {torn_id: made_whole})
    assert_once(got[torn_id], made_whole, "the torn run, made whole")


def test_replay_after_a_collector_sigkill_and_restart_stores_every_point_once(
    backend: Backend, collector: Collector, runs_dir: Path
) -> None:
    """SIGKILL the collector mid-replay (one run stored, one still being written, one torn by
    kill -9, one not yet there), restart it on the same storage, then the torn line is made
    whole: every point stored, none twice, the first run not read again (offsets kept)."""
    first = offline_recorder("first", runs_dir)
    with first:
        record(first, 0, 2000)
    growing = offline_recorder("growing", runs_dir)
    growing.start()
    record(growing, 0, 500)
    torn_id, torn_dir, rest = torn_run(runs_dir)
    wait_for("the growing run's first lines", lambda: on_disk(growing.run_dir), 30)
    early = {rec.recording_id: on_disk(rec.run_dir) for rec in (first, growing)}
    early[torn_id] = on_disk(torn_dir)
    wait_for(
        "the first runs at the backend",
        lambda: all(not (w - stored(backend, r)) for r, w in early.items()),
        90,
    )
    collector.kill()
    record(growing, 500, 1500)
    growing.stop()
    with (torn_dir / "metrics.jsonl").open("ab") as f:
        f.write(rest)  # the torn line is whole now, while the collector is down
    later = offline_recorder("later", runs_dir)
    with later:
        record(later, 0, 1000)
    collector.start()
    runs = {rec.recording_id: on_disk(rec.run_dir) for rec in (first, growing, later)}
    assert [sum(w.values()) for w in runs.values()] == [4000, 3000, 2000]
    runs[torn_id] = on_disk(torn_dir)
    assert sum(runs[torn_id].values()) > sum(early[torn_id].values())
    got = settle(backend, collector, runs)
    # The offsets survived: the first run, read and delivered before the kill, was not read again.
    dirs = (first.run_dir, growing.run_dir, later.run_dir, torn_dir)
    every_line = sum(len(lines(d, s)) for d in dirs for s in SIGNALS)
    first_lines = sum(len(lines(first.run_dir, s)) for s in SIGNALS)
    read_again = collector.metric("otelcol_receiver_accepted_log_records")
    assert 0 < read_again <= every_line - first_lines, (read_again, every_line, first_lines)
    for rid, want in runs.items():
        assert_once(got[rid], want, rid)


def test_backend_down_during_replay_then_back_the_persistent_queue_delivers_everything_once(
    backend: Backend, tmp_path: Path, runs_dir: Path
) -> None:
    """The backend is down while the collector reads a run (and the collector is SIGKILLed with
    it all queued); once the backend is back, every point is stored, once."""
    run = offline_recorder("queued", runs_dir)
    with run:
        record(run, 0, 3000)
    want = on_disk(run.run_dir)
    backend.kill()
    collector = Collector(
        tmp_path / "collector", backend_url=backend.url, token=backend.token, runs_dir=runs_dir
    )
    try:
        lines_read = len(lines(run.run_dir, "metrics")) + len(lines(run.run_dir, "traces"))
        wait_for(
            "the collector to read the run while the backend is down",
            lambda: collector.metric("otelcol_receiver_accepted_log_records") >= lines_read,
        )
        assert collector.metric("otelcol_exporter_queue_size", exporter="otlp_http/markov") > 0
        collector.kill()  # everything read is in the queue on disk, nothing delivered
        collector.start()
        backend.start()
        got = settle(backend, collector, {run.recording_id: want})
    finally:
        collector.stop()
    assert sum(want.values()) == 6000
    assert_once(got[run.recording_id], want, "queued while the backend was down")


# --- an application's own OpenTelemetry beside a recording ------------------------------------


def test_an_apps_own_sdk_metrics_and_a_recording_share_the_collector_without_mixing(
    collector: Collector, backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An app's own MeterProvider and a recording send to the same collector: the app's counter
    reaches Prometheus without run labels and never the backend; the run's series carry only the
    run's labels, and its 2 x 500 exact points are stored once."""
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.otlp_http)
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "500")
    monkeypatch.setenv("MARKOV_EXPORT_POINTS", "1")
    app = MeterProvider(
        metric_readers=[
            PeriodicExportingMetricReader(
                OTLPMetricExporter(endpoint=f"{collector.otlp_http}/v1/metrics"), 500
            )
        ],
        resource=Resource.create({"service.name": "my-app"}),
    )
    requests_served = app.get_meter("my-app").create_counter("app.requests")
    recorder = offline_recorder("beside-app")
    with recorder:
        for i in range(500):
            record(recorder, i, i + 1)
            requests_served.add(1, {"route": "/train"})
    app.force_flush()

    def both_exposed() -> str | None:
        text = requests.get(f"http://{collector.prometheus_target}/metrics", timeout=5).text
        return text if "app_requests_total{" in text and "markov_record_last{" in text else None

    exposed = wait_for("both at the Prometheus exporter", both_exposed)
    app.shutdown()
    for line in exposed.splitlines():
        if line.startswith("app_requests_total{"):
            assert 'job="my-app"' in line and "markov_" not in line, line
        elif line.startswith("markov_"):
            assert f'markov_recording_id="{recorder.recording_id}"' in line, line
            assert 'job="my-app"' not in line and "route=" not in line, line
    want = Counter((key, step) for key in KEYS for step in range(500))
    got = settle(backend, collector, {recorder.recording_id: want})
    assert_once(got[recorder.recording_id], want, "the recording beside the app")
    assert stored(backend, recorder.recording_id, ("app.requests",)) == Counter()
    listed = requests.get(f"{backend.url}/api/v1/recordings", headers=backend.headers, timeout=10)
    assert [r["recording_id"] for r in listed.json()] == [recorder.recording_id]


def _data_points(run_dir: Path) -> int:
    """Every data point (gauges and histograms) of a run dir's whole metrics lines."""
    total = 0
    for line in lines(run_dir, "metrics"):
        for rm in json.loads(line)["resourceMetrics"]:
            for sm in rm["scopeMetrics"]:
                for metric in sm["metrics"]:
                    kind = metric.get("gauge") or metric.get("exponentialHistogram") or {}
                    total += len(kind.get("dataPoints", ()))
    return total


def _log_records(run_dir: Path) -> int:
    """Every log record of a run dir's whole logs lines."""
    return sum(
        len(sl["logRecords"])
        for line in lines(run_dir, "logs")
        for rl in json.loads(line)["resourceLogs"]
        for sl in rl["scopeLogs"]
    )


def test_distributions_and_texts_by_sync_and_by_the_collectors_replay_are_stored_once(
    backend: Backend, collector: Collector, runs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run of 40 arrays and 40 texts reaches the backend twice: by `mkv sync` (the recorder's
    own route, OTLP-JSON with its keys) and by the collector replaying its run dir (protobuf,
    no key): read.distributions and read.texts return each of the 40 once."""
    import numpy as np

    from markov_otel import read
    from markov_otel.cli.main import main

    monkeypatch.setenv("MARKOV_ENDPOINT", backend.url)
    monkeypatch.setenv("MARKOV_API_KEY", backend.token)
    recorder = offline_recorder("arrays", runs_dir)
    with recorder:
        for step in range(40):
            recorder.add_record(
                {"w": np.arange(50.0) * (step + 1), "s": f"sample {step}"}, step=step
            )
    assert main(["sync", recorder.recording_id, "--dir", str(runs_dir)]) == 0
    points, records = _data_points(recorder.run_dir), _log_records(recorder.run_dir)
    assert points >= 40 and records >= 40  # control: the run dir holds them

    def replayed() -> bool:  # control: the backend answered the whole run dir's replay too
        sent = collector.metric("otelcol_exporter_sent_metric_points", exporter="otlp_http/markov")
        logs = collector.metric("otelcol_exporter_sent_log_records", exporter="otlp_http/markov")
        return sent >= points and logs >= records

    wait_for("the collector's replay of the run dir", replayed, 90)
    rid = recorder.recording_id
    got = read.distributions(rid, "w", source=backend.url)
    assert [(d.step, d.count, d.max) for d in got] == [(s, 50, 49.0 * (s + 1)) for s in range(40)]
    texts = read.texts(rid, "s", source=backend.url)
    assert [(t.step, t.text) for t in texts] == [(s, f"sample {s}") for s in range(40)]


def test_collector_binary_helpers_name_the_build_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a binary the tests skip naming build.sh (and fail in CI); control for the skip."""
    monkeypatch.setenv("MARKOV_OTELCOL", "/nonexistent/markov-otelcol")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"build\.sh"):
        otelcol_binary()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match=r"build\.sh"):
        otelcol_binary()
