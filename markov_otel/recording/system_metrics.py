"""System metrics: host, process and NVIDIA GPU samples, recorded as points of the run.

The OpenTelemetry system-metrics instrumentation (psutil) and, when NVML answers, GPU gauges
(`GpuGauges`) are registered on a MeterProvider of the sampler's own: never the global one, and
not the recorder's aggregated-view provider either (its readers would run these callbacks on
their own schedule, and every collection resets psutil's CPU-percentage baselines). Its only
reader is an `InMemoryMetricReader` that the sampler's thread collects every `interval` seconds;
each collection becomes ONE record (time_ns, step, {key: value}) in the recorder's buffer, as
an add_record call makes: stamped at sampling, carrying the step of the last record
(`ExperimentRecorder._append_sample`), then encoded, spooled and sent by the same flusher and
sender.

Names and attributes follow the OpenTelemetry semantic conventions (`SEMCONV_VERSION`): the
instrumentation still emits the older attribute names (`state`, `type`, `cpu`), renamed here to
the convention's (`cpu.mode`, `system.memory.state`, `cpu.logical_number`); machine-wide disk and
network I/O (`system.disk.io`, `system.network.io`, by `disk.io.direction` and
`network.io.direction`) are read from psutil's totals by counters of our own.

Keys start with `system.`, `process.` or `hw.` (`SYSTEM_PREFIXES`): the OTel name, then the
attributes that tell series apart folded in as `/<label>.<value>` (`FOLDED`, `otel/series.py`),
e.g. `system.cpu.utilization/mode.user`; the CPU number of `system.cpu.utilization` is averaged
over (the whole machine's utilisation per mode).
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from markov_otel.otel.series import RANK_ATTRIBUTE, SeriesTable, fold
from markov_otel.weather import SayOnce

log = logging.getLogger("markov_otel")

DEFAULT_INTERVAL = 10.0
"""Seconds between samples; one sample costs about 0.3 ms of CPU (benchmarks/bench_system.py)."""
FINAL_SAMPLE_MIN_WINDOW = 0.5
"""stop() samples the run's last stretch only when it lasted this long (or one interval): CPU
figures over a few milliseconds are clock-tick noise (psutil counts 10 ms ticks)."""
SYSTEM_PREFIXES = ("system.", "process.", "hw.")
"""Every key the sampler records starts with one of these (the pages' "System" section)."""
SEMCONV_VERSION = "1.44.0"
"""The OpenTelemetry semantic conventions the system metrics' names and attributes follow."""
INSTRUMENTATION_CONFIG: dict[str, list[str] | None] = {
    "system.cpu.utilization": ["user", "system", "iowait"],
    "system.memory.usage": ["used"],
    "system.memory.utilization": ["used"],
    "process.cpu.time": ["user", "system"],
    "process.cpu.utilization": None,
    "process.memory.usage": None,
}
"""The instrumentation's metrics we sample (of the ~30 it offers), with their modes/states."""
CONVENTION_ATTRIBUTES: dict[str, dict[str, str]] = {
    "system.cpu.utilization": {"state": "cpu.mode", "cpu": "cpu.logical_number"},
    "system.memory.usage": {"state": "system.memory.state"},
    "system.memory.utilization": {"state": "system.memory.state"},
    "process.cpu.time": {"type": "cpu.mode"},
}
"""Per metric, the instrumentation's attribute name -> the semantic conventions' name."""
FOLDED = {
    "cpu.mode": "mode",
    "system.memory.state": "state",
    "disk.io.direction": "direction",
    "network.io.direction": "direction",
}
"""Attributes that tell a metric's series apart, and their label in the record key."""
AVERAGED_ATTRIBUTES = frozenset({"cpu.logical_number"})
"""Point attributes averaged over rather than kept as series (per-CPU series: 100s on a server)."""

Sample = dict[str, float | int]


class SystemSampler:
    """One per recorder: a thread that samples every `interval` seconds until `stop()`."""

    def __init__(
        self,
        record: Callable[[int, Sample], None],
        series: SeriesTable,
        interval: float,
        *,
        rank: int | None = None,
        clock: Callable[[], int] = time.time_ns,
        nvml: Any = None,
    ) -> None:
        self._record, self._series = record, series  # record(time_ns, {key: value})
        self._interval, self._rank, self._clock = interval, rank, clock
        self._nvml = nvml  # the NVML module (None: import pynvml when the thread starts)
        self._stop = threading.Event()
        self._trouble = SayOnce(log)
        self.samples = 0
        # The thread's own CPU time (time.thread_time), for benchmarks: setting up (imports,
        # instruments, NVML) once, then sampling.
        self.setup_cpu_seconds = self.sampling_cpu_seconds = 0.0
        self._thread = threading.Thread(target=self._run, name="markov-system", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """Sample the last stretch (see FINAL_SAMPLE_MIN_WINDOW), release the provider and NVML,
        join; False if time ran out."""
        self._stop.set()
        self._thread.join(max(0.0, timeout))
        return not self._thread.is_alive()

    def _run(self) -> None:
        started = time.thread_time()
        try:
            collector = _Collector.open(self._nvml)
        except Exception as exc:  # a host psutil cannot read: the run goes on without
            log.warning("markov_otel: system metrics are off: %s", exc)
            return
        if collector is None:
            return
        try:
            collector.collect()  # primes the CPU percentages (psutil measures between calls)
            last = time.monotonic()
            self.setup_cpu_seconds = time.thread_time() - started
            while not self._stop.wait(self._interval):
                self._sample(collector)
                last = time.monotonic()
            if time.monotonic() - last >= min(self._interval, FINAL_SAMPLE_MIN_WINDOW):
                self._sample(collector)  # the run's last stretch
        except Exception as exc:
            log.warning("markov_otel: system metrics stopped: %s", exc)
        finally:
            collector.close()
            self.sampling_cpu_seconds = time.thread_time() - started - self.setup_cpu_seconds

    def _sample(self, collector: _Collector) -> None:
        try:
            values = self._keys(collector.collect())
        except Exception as exc:  # psutil or NVML trouble is weather: skip this sample
            self._trouble.say("sample", logging.WARNING, "markov_otel: system metrics: %s", exc)
            return
        if values:
            self._record(self._clock(), values)
            self.samples += 1

    def _keys(self, observed: Iterable[tuple[str, Mapping[str, Any], float | int]]) -> Sample:
        """Fold each series into its record key (describing new keys for the encoder)."""
        sums: dict[str, list[float | int]] = {}
        for name, attributes, value in observed:
            renamed = CONVENTION_ATTRIBUTES.get(name, {})
            named = {renamed.get(k, k): v for k, v in attributes.items()}
            kept = {k: v for k, v in named.items() if k not in AVERAGED_ATTRIBUTES}
            key = fold(name, _labels(kept))
            if self._rank is not None:
                kept[RANK_ATTRIBUTE] = self._rank
                key = fold(key, {"rank": self._rank})
            if key not in sums:
                self._series.describe(key, name, kept)
                sums[key] = []
            sums[key].append(value)
        return {k: v[0] if len(v) == 1 else sum(v) / len(v) for k, v in sums.items()}


def _labels(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """The folded part of a key: the CPU mode, memory state or I/O direction (`FOLDED`), the GPU
    index (`hw.id`)."""
    labels = {FOLDED[k]: v for k, v in attributes.items() if k in FOLDED}
    if attributes.get("hw.type") == "gpu":
        labels["gpu"] = attributes["hw.id"]
    return labels


class _Collector:
    """The private MeterProvider with its instruments and the reader the sampler collects."""

    def __init__(self, provider: Any, reader: Any, gpus: GpuGauges | None) -> None:
        self._provider, self._reader, self._gpus = provider, reader, gpus

    @classmethod
    def open(cls, nvml: Any) -> _Collector | None:
        try:  # imported here: recorder import stays light, and nothing runs at import time
            from opentelemetry.instrumentation.system_metrics import SystemMetricsInstrumentor
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import InMemoryMetricReader
            from opentelemetry.sdk.resources import Resource
        except ImportError as exc:
            log.warning(
                "markov_otel: system metrics are off: %s; pip install "
                "opentelemetry-instrumentation-system-metrics psutil",
                exc,
            )
            return None

        class _OwnInstrumentor(SystemMetricsInstrumentor):
            """One per sampler: BaseInstrumentor is a process-wide singleton whose second
            instrument() does nothing, so a second recorder (or the app's own use of the
            instrumentation) would get no metrics on its provider."""

            _instance = None

            def __new__(cls, *args: Any, **kwargs: Any) -> Any:
                return object.__new__(cls)

        reader = InMemoryMetricReader()
        provider = MeterProvider(
            metric_readers=[reader], resource=Resource.get_empty(), shutdown_on_exit=False
        )
        _OwnInstrumentor(config=INSTRUMENTATION_CONFIG).instrument(
            meter_provider=provider, skip_dep_check=True
        )
        machine_io(provider.get_meter("markov_otel.io"))
        gpus = GpuGauges.open(provider.get_meter("markov_otel.gpu"), nvml)
        return cls(provider, reader, gpus)

    def collect(self) -> list[tuple[str, Mapping[str, Any], float | int]]:
        """(metric name, point attributes, value) of every point of one collection."""
        data = self._reader.get_metrics_data()
        observed: list[tuple[str, Mapping[str, Any], float | int]] = []
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    for point in metric.data.data_points:
                        observed.append((metric.name, point.attributes or {}, point.value))
        return observed

    def close(self) -> None:
        self._provider.shutdown()
        if self._gpus is not None:
            self._gpus.close()


def machine_io(meter: Any) -> None:
    """`system.disk.io` and `system.network.io` (bytes, cumulative) of the whole machine by
    direction, from psutil's totals (per device they would count a disk and its partitions
    twice, and add a series per loop device and virtual interface)."""
    import psutil
    from opentelemetry.metrics import Observation

    def disk(options: Any) -> Iterable[Any]:
        counters = psutil.disk_io_counters()
        if counters is not None:  # no disk psutil can see (some containers)
            yield Observation(counters.read_bytes, {"disk.io.direction": "read"})
            yield Observation(counters.write_bytes, {"disk.io.direction": "write"})

    def network(options: Any) -> Iterable[Any]:
        counters = psutil.net_io_counters()
        yield Observation(counters.bytes_sent, {"network.io.direction": "transmit"})
        yield Observation(counters.bytes_recv, {"network.io.direction": "receive"})

    meter.create_observable_counter("system.disk.io", [disk], unit="By")
    meter.create_observable_counter("system.network.io", [network], unit="By")


class GpuGauges:
    """`hw.gpu.utilization`, `hw.gpu.memory.usage`/`.limit`, `hw.temperature`, `hw.power` of
    every NVIDIA GPU through NVML (`nvidia-ml-py`, the `gpu` extra), each with `hw.id` (the
    GPU index) and `hw.type=gpu`. A query a GPU does not support is left out, said once."""

    def __init__(self, nvml: Any, handles: list[Any]) -> None:
        self._nvml, self._handles = nvml, handles
        self._unsupported: set[tuple[str, int]] = set()

    @classmethod
    def open(cls, meter: Any, nvml: Any = None) -> GpuGauges | None:
        """The gauges on `meter`, or None (one debug line) without NVML, driver or GPU."""
        try:
            nvml = nvml or importlib.import_module("pynvml")  # nvidia-ml-py, the `gpu` extra
            nvml.nvmlInit()
        except Exception as exc:  # ImportError, or NVMLError: no library, no driver
            log.debug("markov_otel: no NVIDIA GPU metrics (NVML: %s)", exc or type(exc).__name__)
            return None
        handles: list[Any] = []
        reason = "NVML sees no GPU"
        try:
            handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
        except Exception as exc:
            reason = f"NVML: {exc}"
        if not handles:
            nvml.nvmlShutdown()
            log.debug("markov_otel: no NVIDIA GPU metrics (%s)", reason)
            return None
        gauges = cls(nvml, handles)
        gauges._instruments(meter)
        return gauges

    def _instruments(self, meter: Any) -> None:
        nvml = self._nvml
        readings: list[tuple[str, str, Callable[[Any], float]]] = [
            ("hw.gpu.utilization", "1", lambda h: nvml.nvmlDeviceGetUtilizationRates(h).gpu / 100),
            ("hw.gpu.memory.usage", "By", lambda h: nvml.nvmlDeviceGetMemoryInfo(h).used),
            ("hw.gpu.memory.limit", "By", lambda h: nvml.nvmlDeviceGetMemoryInfo(h).total),
            ("hw.temperature", "Cel", lambda h: nvml.nvmlDeviceGetTemperature(h, 0)),  # GPU die
            ("hw.power", "W", lambda h: nvml.nvmlDeviceGetPowerUsage(h) / 1000),  # from mW
        ]
        for name, unit, read in readings:
            meter.create_observable_gauge(name, [self._observe(name, read)], unit=unit)

    def _observe(self, name: str, read: Callable[[Any], float]) -> Callable[[Any], Iterable[Any]]:
        from opentelemetry.metrics import Observation

        def observe(options: Any) -> Iterable[Any]:
            for index, handle in enumerate(self._handles):
                if (name, index) in self._unsupported:
                    continue
                try:
                    value = read(handle)
                except self._nvml.NVMLError as exc:
                    self._unsupported.add((name, index))
                    log.debug("markov_otel: GPU %d gives no %s (NVML: %s)", index, name, exc)
                    continue
                yield Observation(value, {"hw.id": str(index), "hw.type": "gpu"})

        return observe

    def close(self) -> None:
        self._nvml.nvmlShutdown()
