"""System metrics: samples of the host and the process become points of the run, on disk, on the
backend and in `mkv show`; GPUs through NVML when there are any; off by keyword, env or config."""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import psutil
import pytest
from otlp_files import attributed_points as wire_points

from markov_otel import ConfigError, ExperimentRecorder, RecordingMode
from markov_otel.cli.main import main
from markov_otel.config import write_config_value
from markov_otel.otel.encoding import MetricsEncoder
from markov_otel.otel.series import SeriesTable
from markov_otel.recording.system_metrics import (
    FINAL_SAMPLE_MIN_WINDOW,
    SYSTEM_PREFIXES,
    SystemSampler,
)

DEFAULT_KEYS = {
    "system.cpu.utilization/mode.user",
    "system.cpu.utilization/mode.system",
    "system.cpu.utilization/mode.iowait",
    "system.memory.usage/state.used",
    "system.memory.utilization/state.used",
    "system.disk.io/direction.read",
    "system.disk.io/direction.write",
    "system.network.io/direction.transmit",
    "system.network.io/direction.receive",
    "process.cpu.time/mode.user",
    "process.cpu.time/mode.system",
    "process.cpu.utilization",
    "process.memory.usage",
}
CONVENTION = {  # semantic conventions 1.44: the attribute each metric's series differ by
    "system.cpu.utilization": "cpu.mode",
    "system.memory.usage": "system.memory.state",
    "system.memory.utilization": "system.memory.state",
    "system.disk.io": "disk.io.direction",
    "system.network.io": "network.io.direction",
    "process.cpu.time": "cpu.mode",
}
MARGIN_NS = 20_000_000
FAST = {"system_metrics": True, "system_metrics_interval": 0.1, "batch_processing_interval": 0.05}


def offline(**kwargs: Any) -> ExperimentRecorder:
    return ExperimentRecorder("system", recording_mode=RecordingMode.OFFLINE, **kwargs)


def system_points(run_dir: Path) -> list[dict[str, Any]]:
    return [p for p in wire_points(run_dir) if p["key"].startswith(SYSTEM_PREFIXES)]


def sample_times(run_dir: Path) -> list[int]:
    return sorted({p["time"] for p in system_points(run_dir)})


def wait_for_samples(run_dir: Path, count: int) -> None:
    """Until `count` samples are on disk (the test's timeout bounds it)."""
    while len(sample_times(run_dir)) < count:
        time.sleep(0.05)


def sampler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "markov-system"]


def test_samples_are_points_with_semantic_names_and_folded_keys(isolated: Path) -> None:
    """Each sample is one point per default key, all stamped alike; names and attributes are
    the current OTel semantic conventions' (cpu.mode, system.memory.state, the I/O directions),
    the attribute's value also in the key; values are plausible."""
    recorder = offline(**FAST)
    with recorder:
        recorder.add_record({"loss": 1.0})
        wait_for_samples(recorder.run_dir, 3)
    found = system_points(recorder.run_dir)
    times = sample_times(recorder.run_dir)
    assert len(times) >= 3
    per_time = Counter(p["time"] for p in found)
    assert set(per_time.values()) == {len(DEFAULT_KEYS)}  # every key once in every sample
    assert {p["key"] for p in found} == DEFAULT_KEYS
    for point in found:
        name, key, attrs = point["name"], point["key"], point["attributes"]
        assert key.split("/")[0] == name
        if name in CONVENTION:
            label = key.split("/")[1].split(".")[0]
            assert key == f"{name}/{label}.{attrs[CONVENTION[name]]}", (key, attrs)
            assert set(attrs) == {"markov.step", "markov.key", CONVENTION[name]}, attrs
        else:
            assert set(attrs) <= {"markov.step", "markov.key"}, attrs
        if name.endswith(".utilization"):
            assert 0.0 <= point["value"] <= 1.0, point
        if name.endswith((".io", ".time")):
            assert point["value"] >= 0, point
    memory = [p["value"] for p in found if p["key"] == "system.memory.usage/state.used"]
    assert all(0 < used < psutil.virtual_memory().total for used in memory)
    rss = [p["value"] for p in found if p["key"] == "process.memory.usage"]
    assert all(isinstance(v, int) and v > 10 << 20 for v in rss)  # an interpreter's RSS
    assert sampler_threads() == []


def test_each_sample_carries_the_step_of_the_last_record(isolated: Path) -> None:
    """Samples before the first record carry step 0; after add_record(step=s), step s."""
    recorder = offline(**FAST)
    with recorder:  # 3 samples between records: at most one is near a record, unchecked
        wait_for_samples(recorder.run_dir, 3)
        for step in (10, 25, 7):
            recorder.add_record({"loss": float(step)}, step=step)
            after = time.time_ns() + MARGIN_NS
            while len([t for t in sample_times(recorder.run_dir) if t > after]) < 3:
                time.sleep(0.05)
    records = sorted(
        (p["time"], p["step"]) for p in wire_points(recorder.run_dir) if p["key"] == "loss"
    )
    checked = Counter()
    for point in system_points(recorder.run_dir):
        if any(abs(point["time"] - t) < MARGIN_NS for t, _ in records):
            continue  # sampled as the record was made: either step is right
        expected = max(((t, s) for t, s in records if t < point["time"]), default=(0, 0))[1]
        assert point["step"] == expected, (point, records)
        checked[expected] += 1
    assert {step: n >= 2 * len(DEFAULT_KEYS) for step, n in checked.items()} == {
        0: True,
        10: True,
        25: True,
        7: True,
    }


def test_a_long_interval_still_gives_the_sample_at_stop(isolated: Path) -> None:
    """With an interval longer than the run, stop() samples the run's stretch (it lasted past
    FINAL_SAMPLE_MIN_WINDOW) and ends the thread."""
    recorder = offline(system_metrics=True, system_metrics_interval=3600)
    with recorder:
        recorder.add_record({"loss": 0.5})
        assert len(sampler_threads()) == 1
        time.sleep(FINAL_SAMPLE_MIN_WINDOW + 0.1)
    assert len(sample_times(recorder.run_dir)) == 1
    assert {p["key"] for p in system_points(recorder.run_dir)} == DEFAULT_KEYS
    assert sampler_threads() == []


def test_a_run_too_short_to_measure_has_no_sample(isolated: Path) -> None:
    """A run that stops within milliseconds records no CPU figures (they would be tick noise)
    and still ends the sampler thread."""
    recorder = offline(system_metrics=True, system_metrics_interval=3600)
    with recorder:
        recorder.add_record({"loss": 0.5})
    assert system_points(recorder.run_dir) == []
    assert sampler_threads() == []


def test_system_metrics_are_off_when_turned_off(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """system_metrics=False (keyword) wins over MARKOV_SYSTEM_METRICS=1: no sampler, no keys."""
    monkeypatch.setenv("MARKOV_SYSTEM_METRICS", "1")
    recorder = offline(system_metrics=False, system_metrics_interval=0.1)
    with recorder:
        assert sampler_threads() == []
        recorder.add_record({"loss": 0.5})
        time.sleep(0.3)
    assert {p["key"] for p in wire_points(recorder.run_dir)} == {"loss"}


def test_settings_resolve_keyword_over_env_over_config_file(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """system_metrics(_interval) and ranks follow argument > environment > config file."""
    write_config_value("system_metrics", "false")
    write_config_value("system_metrics_interval", "30")
    write_config_value("ranks", "all")
    monkeypatch.delenv("MARKOV_SYSTEM_METRICS")
    assert offline().config["system_metrics"] is False
    assert offline().config["system_metrics_interval"] == 30.0
    monkeypatch.setenv("MARKOV_SYSTEM_METRICS", "1")
    monkeypatch.setenv("MARKOV_SYSTEM_METRICS_INTERVAL", "2.5")
    assert offline().config["system_metrics"] is True
    assert offline().config["system_metrics_interval"] == 2.5
    chosen = offline(system_metrics=False, system_metrics_interval=0.5, ranks="0")
    assert (chosen.config["system_metrics"], chosen.config["system_metrics_interval"]) == (
        False,
        0.5,
    )
    assert chosen.config["ranks"] == "0"
    assert offline().config["ranks"] == "all"


def test_the_defaults_are_on_every_ten_seconds(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without any setting, system metrics are on, sampled every 10 s."""
    monkeypatch.delenv("MARKOV_SYSTEM_METRICS")
    config = offline().config
    assert (config["system_metrics"], config["system_metrics_interval"]) == (True, 10.0)


@pytest.mark.parametrize("bad", [0, -1, 0.05, "soon", math.nan, math.inf, True])
def test_a_bad_interval_is_refused_naming_it(isolated: Path, bad: object) -> None:
    """An interval that is not a number of seconds >= 0.1 is a ConfigError naming the setting."""
    with pytest.raises(ConfigError, match="system_metrics_interval"):
        offline(system_metrics_interval=bad)


def test_without_a_gpu_one_debug_line_and_no_gpu_keys(
    isolated: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No NVIDIA driver (this machine): one debug line about NVML, nothing louder, no hw.* keys."""
    pynvml = pytest.importorskip("pynvml")  # the `gpu` extra, in the test extra
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("this machine has an NVIDIA driver")
    recorder = offline(system_metrics=True, system_metrics_interval=0.1)
    with caplog.at_level(logging.DEBUG, logger="markov_otel"), recorder:
        recorder.add_record({"loss": 0.5})
        wait_for_samples(recorder.run_dir, 2)
    ours = [r for r in caplog.records if r.name == "markov_otel"]
    assert [r.levelno for r in ours if "GPU" in r.getMessage()] == [logging.DEBUG]
    assert [r.getMessage() for r in ours if r.levelno >= logging.WARNING] == []
    assert not [p for p in system_points(recorder.run_dir) if p["key"].startswith("hw.")]


class StandInNvml:
    """NVML's functions as nvidia-ml-py names them, for two GPUs; GPU 1 reports no power (as
    some boards do). There is no GPU on CI: this checks our names, units and keys only."""

    class NVMLError(Exception):
        pass

    def __init__(self) -> None:
        self.inits = self.shutdowns = 0

    def nvmlInit(self) -> None:
        self.inits += 1

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        return type("Rates", (), {"gpu": 40 + handle, "memory": 10})()

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        return type("Memory", (), {"used": (handle + 1) << 30, "total": 16 << 30})()

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        assert sensor == 0  # NVML_TEMPERATURE_GPU
        return 60 + handle

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        if handle == 1:
            raise self.NVMLError("Not Supported")
        return 250_000  # milliwatts


def test_gpu_gauges_give_each_gpu_its_keys_in_semantic_units() -> None:
    """Per GPU: utilisation as a fraction, memory in bytes, °C, W; the GPU index in hw.id and
    in the key; a query a GPU refuses is left out; NVML is shut down at stop."""
    nvml = StandInNvml()
    samples: list[dict[str, float | int]] = []
    series = SeriesTable()
    sampler = SystemSampler(lambda t, v: samples.append(v), series, 0.1, nvml=nvml)
    sampler.start()
    while not samples:
        time.sleep(0.02)
    assert sampler.stop(10)
    sample = samples[0]
    gpu = {k: v for k, v in sample.items() if k.startswith("hw.")}
    assert gpu == {
        "hw.gpu.utilization/gpu.0": 0.40,
        "hw.gpu.utilization/gpu.1": 0.41,
        "hw.gpu.memory.usage/gpu.0": 1 << 30,
        "hw.gpu.memory.usage/gpu.1": 2 << 30,
        "hw.gpu.memory.limit/gpu.0": 16 << 30,
        "hw.gpu.memory.limit/gpu.1": 16 << 30,
        "hw.temperature/gpu.0": 60,
        "hw.temperature/gpu.1": 61,
        "hw.power/gpu.0": 250.0,
    }
    described = series.lookup("hw.power/gpu.0", "")
    assert described is not None
    assert (described.name, dict(described.attributes)) == (
        "hw.power",
        {"hw.id": "0", "hw.type": "gpu"},
    )
    assert (nvml.inits, nvml.shutdowns) == (1, 1)


def real_gpus() -> int:
    """How many GPUs the real NVML sees; skips (saying why) where there is none to see."""
    pynvml = pytest.importorskip("pynvml", reason="the `gpu` extra (nvidia-ml-py) is missing")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        pytest.skip(f"no NVIDIA driver here, so no real NVML ({exc}); the stand-in test runs")
    try:
        count = int(pynvml.nvmlDeviceGetCount())
    finally:
        pynvml.nvmlShutdown()
    if count == 0:
        pytest.skip("NVML sees no GPU on this machine")
    return count


def test_the_real_nvml_gives_every_gpu_its_keys_where_there_is_one() -> None:
    """On a machine with NVIDIA GPUs, the sampler through the real pynvml (no stand-in): each
    GPU's utilisation (a fraction), memory used and limit (bytes, used <= limit) and
    temperature, keyed by its index; NVML is imported and shut down by the sampler itself."""
    count = real_gpus()
    samples: list[dict[str, float | int]] = []
    sampler = SystemSampler(lambda t, v: samples.append(v), SeriesTable(), 0.1)
    sampler.start()
    deadline = time.monotonic() + 60
    while not samples:
        assert time.monotonic() < deadline, "no sample in 60 s"
        time.sleep(0.02)
    assert sampler.stop(10)
    sample = samples[0]
    for gpu in range(count):
        utilization = sample[f"hw.gpu.utilization/gpu.{gpu}"]
        used = sample[f"hw.gpu.memory.usage/gpu.{gpu}"]
        limit = sample[f"hw.gpu.memory.limit/gpu.{gpu}"]
        assert 0.0 <= utilization <= 1.0
        assert 0 <= used <= limit and limit > 0
        assert f"hw.temperature/gpu.{gpu}" in sample
    assert not [k for k in sample if k.startswith("hw.") and k.endswith(f"/gpu.{count}")]


def test_ordinary_records_encode_byte_for_byte_as_before() -> None:
    """A series table changes nothing for keys it does not describe; a described key keeps its
    OTel name and carries its attributes between markov.step and markov.key."""
    records = [(1_000, 3, {"loss": 0.5, "val loss": 1, "ok": True})]
    table = SeriesTable()
    table.describe(
        "system.cpu.utilization/mode.user", "system.cpu.utilization", {"cpu.mode": "user"}
    )
    plain, _ = MetricsEncoder().encode(records, "[]")
    assert MetricsEncoder(table).encode(records, "[]")[0] == plain
    line, count = MetricsEncoder(table).encode(
        [(1_000, 3, {"system.cpu.utilization/mode.user": 0.25})], "[]"
    )
    (metric,) = json.loads(line)["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]
    assert metric["name"] == "system.cpu.utilization"
    assert [a["key"] for a in metric["gauge"]["dataPoints"][0]["attributes"]] == [
        "markov.step",
        "cpu.mode",
        "markov.key",
    ]
    assert count == 1


def test_samples_reach_the_backend_and_mkv_show(backend: Any, capsys: Any) -> None:
    """ONLINE: every sample point on disk is stored once on the backend under its folded key,
    and `mkv show` lists the last value of each system key."""
    recorder = ExperimentRecorder(
        "system-online",
        recording_mode=RecordingMode.ONLINE,
        endpoint=backend.url,
        api_key=backend.token,
        **FAST,
    )
    with recorder:
        for step in range(5):
            recorder.add_record({"loss": 1.0 / (step + 1)})
            time.sleep(0.05)
        wait_for_samples(recorder.run_dir, 3)
    on_disk: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for point in system_points(recorder.run_dir):
        on_disk[point["key"]].append((point["step"], point["time"]))
    assert set(on_disk) == DEFAULT_KEYS
    for key, expected in on_disk.items():
        stored = backend.records(recorder.recording_id, key)
        assert sorted((p["step"], p["time_unix_nano"]) for p in stored) == sorted(expected), key
    assert main(["show", recorder.recording_id]) == 0
    shown = capsys.readouterr().out
    for key in DEFAULT_KEYS:
        assert f"  {key} " in shown
