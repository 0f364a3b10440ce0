"""collector-config/ and docker-compose.yml, checked without Docker.

The names and ports here must agree with the code (markov_otel/config.py,
markov_otel/shipping/spool.py)
and with docs/protocol.md's "Telemetry names" table; the table is parsed from the markdown so a
change on either side fails here. Needs PyYAML; the promtool check needs Debian's prometheus.
"""

from __future__ import annotations

import ast
import contextlib
import glob
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = ROOT / "collector-config"
COLLECTOR = CONFIG_DIR / "otel-collector.yaml"
PROMETHEUS = CONFIG_DIR / "prometheus.yml"
DOCKERFILE = CONFIG_DIR / "markov-server.Dockerfile"
GRAFANA = CONFIG_DIR / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "markov-experiments.json"
COMPOSE = ROOT / "docker-compose.yml"
PROTOCOL = ROOT / "docs" / "protocol.md"
OTEL_DOC = ROOT / "docs" / "opentelemetry.md"

YAML_FILES = sorted(
    [COLLECTOR, PROMETHEUS, COMPOSE, *GRAFANA.glob("provisioning/*/*.yaml")], key=str
)
JSON_FILES = sorted(GRAFANA.glob("dashboards/*.json"))

# Ports the stack publishes by convention (OTLP) or by choice (collector's prometheus exporter).
OTLP_GRPC_PORT = 4317
OTLP_HTTP_PORT = 4318
COLLECTOR_PROMETHEUS_PORT = 8889
RECORDER_SCRAPE_PORT_DOC = 9464  # opentelemetry-exporter-prometheus default; docs/opentelemetry.md


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


COLLECTOR_VARIABLE = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def collector_variables() -> dict[str, str | None]:
    """Every `${env:NAME:-default}` of the collector config: name -> default (None: none)."""
    text = COLLECTOR.read_text(encoding="utf-8")
    return {m.group(1): m.group(2) for m in COLLECTOR_VARIABLE.finditer(text)}


def collector(env: dict[str, str] | None = None, keep: tuple[str, ...] = ()) -> dict[str, Any]:
    """The collector config as the collector resolves it with `env` (default: none set, so
    every default applies: the compose values); variables named in `keep` stay as written."""
    env = env or {}

    def resolve(m: re.Match[str]) -> str:
        if m.group(1) in keep:
            return m.group(0)
        return env.get(m.group(1), m.group(2) or "")

    return yaml.safe_load(COLLECTOR_VARIABLE.sub(resolve, COLLECTOR.read_text(encoding="utf-8")))


def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE)


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def module_constants(relpath: str) -> dict[str, Any]:
    """Module-level literal constants of a markov_otel source file, read without importing it."""
    path = ROOT / relpath
    if not path.exists():
        return {}
    found: dict[str, Any] = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else (
                [node.target] if isinstance(node, ast.AnnAssign) and node.value is not None else []
            )
        )
        for target in targets:
            if isinstance(target, ast.Name):
                with contextlib.suppress(ValueError):
                    found[target.id] = ast.literal_eval(node.value)  # type: ignore[arg-type]
    return found


def backend_port() -> int:
    """The backend port: config.DEFAULT_ENDPOINT's if the code has it, else mkv serve's 8470."""
    endpoint = module_constants("markov_otel/config.py").get("DEFAULT_ENDPOINT")
    if isinstance(endpoint, str) and urlsplit(endpoint).port:
        return int(urlsplit(endpoint).port)  # type: ignore[arg-type]
    return 8470


def recorder_scrape_port() -> int:
    """The recorder's optional Prometheus endpoint port: a code constant if any, else the doc's."""
    for path in (ROOT / "markov_otel").rglob("*.py"):
        for name, v in module_constants(str(path.relative_to(ROOT))).items():
            if "PROMETHEUS" in name and "PORT" in name and isinstance(v, int):
                return v
    return RECORDER_SCRAPE_PORT_DOC


def telemetry_table() -> list[dict[str, str]]:
    """Rows of docs/protocol.md's "Telemetry names" table."""
    text = PROTOCOL.read_text(encoding="utf-8")
    section = text.split("## Telemetry names", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    header = [c.strip().lower() for c in rows[0].strip("|").split("|")]
    out = []
    for line in rows[2:]:  # rows[1] is the |---| separator
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        out.append(dict(zip(header, cells, strict=False)))
    return out


def published_prometheus_names() -> set[str]:
    return {row["prometheus name"] for row in telemetry_table()}


PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "and",
    "or",
    "unless",
    "inf",
    "nan",
}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression (or a Grafana label_values() query) selects."""
    lv = re.fullmatch(r"\s*label_values\((.*)\)\s*", expr, re.S)
    if lv:
        inner = lv.group(1)
        if "," not in inner:  # label_values(label): no metric named
            return set()
        expr = inner.rsplit(",", 1)[0]
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # range / subquery windows
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        rest = expr[m.end() :].lstrip()
        word = m.group(0)
        if rest.startswith("(") or word.lower() in PROMQL_WORDS:
            continue
        if m.start() > 0 and (expr[m.start() - 1].isdigit() or expr[m.start() - 1] == "."):
            continue  # 1e3, 5m (durations outside brackets), 0.5
        names.add(word)
    return names


def dashboard_prometheus_queries() -> list[str]:
    """Every PromQL string in the dashboard: panel targets and Prometheus template variables."""
    d = dashboard()
    queries = []

    def is_prom(ds: Any) -> bool:
        return isinstance(ds, dict) and ds.get("type") == "prometheus"

    def walk_panels(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                if is_prom(target.get("datasource") or panel.get("datasource")):
                    queries.append(target["expr"])
            walk_panels(panel.get("panels", []))

    walk_panels(d["panels"])
    for var in d["templating"]["list"]:
        if var.get("type") == "query" and is_prom(var.get("datasource")):
            q = var["query"]
            queries.append(q["query"] if isinstance(q, dict) else q)
    for anno in d["annotations"]["list"]:
        if is_prom(anno.get("datasource")):
            queries.append(anno.get("expr") or anno["target"]["expr"])
    return queries


def all_panels() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for p in panels:
            out.append(p)
            walk(p.get("panels", []))

    walk(dashboard()["panels"])
    return out


def endpoint_port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1].split("/")[0])


def provisioned_datasources() -> dict[str, dict[str, Any]]:
    out = {}
    for path in GRAFANA.glob("provisioning/datasources/*.yaml"):
        for ds in load_yaml(path).get("datasources", []):
            out[ds["uid"]] = ds
    return out


# --- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_yaml_file_parses_to_a_mapping(path: Path) -> None:
    """Every YAML file of the stack parses and is a non-empty mapping."""
    data = load_yaml(path)
    assert isinstance(data, dict) and data, f"{path} is empty or not a mapping"


@pytest.mark.parametrize("path", JSON_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_dashboard_json_parses_with_panels(path: Path) -> None:
    """Every dashboard JSON parses, has a uid and at least one panel."""
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data.get("uid") and data.get("panels"), f"{path} lacks uid or panels"


def test_yaml_and_json_files_exist() -> None:
    """The stack's files are present (else the parametrized tests would silently shrink)."""
    assert len(YAML_FILES) >= 5 and JSON_FILES, (YAML_FILES, JSON_FILES)
    assert DOCKERFILE.exists()


# --- the published names -----------------------------------------------------------------------


def test_protocol_table_follows_the_prometheus_naming_convention() -> None:
    """Each Telemetry names row maps its OTel name to the Prometheus name the exporter makes."""
    rows = telemetry_table()
    assert len(rows) >= 8, rows
    for row in rows:
        expected = row["otel name"].replace(".", "_")
        if row["kind"] == "counter":
            expected += "_total"
        assert row["prometheus name"] == expected, row


def test_dashboard_queries_name_only_published_metrics() -> None:
    """Every metric the dashboard's PromQL selects is in protocol.md's Telemetry names table."""
    published = published_prometheus_names()
    queries = dashboard_prometheus_queries()
    used = set().union(*(promql_metric_names(q) for q in queries))
    assert used, "no PromQL metric names found in the dashboard"
    unknown = used - published
    assert not unknown, f"dashboard queries metrics not in docs/protocol.md: {sorted(unknown)}"
    for needed in ("markov_record_last", "markov_record_step", "markov_summary"):
        assert needed in used, f"dashboard never shows {needed}"
    assert any(n.startswith("markov_recorder_points_") for n in used), "no recorder health panel"


def test_promql_name_extraction_sees_through_functions_and_matchers() -> None:
    """The PromQL parser used above finds the metric, not functions, labels or durations."""
    expr = 'sum by (markov_key) (rate(foo_total{markov_recording_id=~"$r", a="b{c}"}[1m])) / bar'
    assert promql_metric_names(expr) == {"foo_total", "bar"}
    assert promql_metric_names('label_values(baz{x="1"}, markov_key)') == {"baz"}
    assert promql_metric_names("label_values(markov_key)") == set()


def test_dashboard_labels_are_the_published_attributes() -> None:
    """The dashboard filters on the Prometheus forms of protocol.md's data-point attributes."""
    text = PROTOCOL.read_text(encoding="utf-8").split("## Telemetry names", 1)[1]
    for label in ("markov_recording_id", "markov_recording_name", "markov_project_id"):
        assert f"`{label}`" in text, f"protocol.md no longer names {label}"
    labels_used = set()
    for q in dashboard_prometheus_queries():
        labels_used |= set(re.findall(r"\b(markov_[a-z_]+)\s*(?:=~|=|!=|!~)", q))
        labels_used |= set(re.findall(r",\s*(markov_[a-z_]+)\)\s*$", q))
    assert labels_used <= {
        "markov_recording_id",
        "markov_recording_name",
        "markov_project_id",
        "markov_key",
    }, labels_used
    assert {"markov_recording_id", "markov_key"} <= labels_used


def test_dashboard_variables_select_project_name_recording_and_key() -> None:
    """Variables: project, recording name, recording id, and the key the panels repeat over."""
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    expect = {
        "project": "markov_project_id",
        "name": "markov_recording_name",
        "recording": "markov_recording_id",
        "key": "markov_key",
    }
    for name, label in expect.items():
        q = variables[name]["query"]
        q = q["query"] if isinstance(q, dict) else q
        assert q.startswith("label_values(markov_record_last") and q.endswith(f", {label})"), q
    assert "$recording" in variables["key"]["query"]["query"]
    repeated = [p for p in all_panels() if p.get("repeat") == "key"]
    assert repeated, "no panel repeats over $key"
    exprs = " ".join(t["expr"] for t in repeated[0]["targets"])
    assert "markov_record_last" in exprs and "markov_record_step" in exprs


def test_dashboard_datasources_are_provisioned() -> None:
    """Every datasource uid the dashboard uses is provisioned, with a compose service's URL."""
    provisioned = provisioned_datasources()
    services = set(compose()["services"])
    uids = set(re.findall(r'"uid":\s*"([^"]+)"', DASHBOARD.read_text(encoding="utf-8")))
    uids -= {"-- Grafana --", dashboard()["uid"]}
    assert uids and uids <= set(provisioned), (uids, set(provisioned))
    for ds in provisioned.values():
        assert urlsplit(ds["url"]).hostname in services, ds


def test_alert_annotations_read_the_backend_alerts_route() -> None:
    """The alert annotation reads GET /api/v1/recordings/{id}/alerts, as protocol.md names it."""
    assert "`GET /api/v1/recordings/{id}/alerts`" in PROTOCOL.read_text(encoding="utf-8")
    annos = [a for a in dashboard()["annotations"]["list"] if not a.get("builtIn")]
    urls = [a["target"]["url"] for a in annos if "url" in a.get("target", {})]
    assert "/api/v1/recordings/${recording}/alerts" in urls, urls
    markov = provisioned_datasources()["markov-api"]
    assert urlsplit(markov["url"]).port == backend_port()


def test_dashboard_provider_path_is_the_compose_mount() -> None:
    """Grafana's dashboard provider reads the directory compose mounts the dashboards into."""
    paths = [
        p["options"]["path"]
        for f in GRAFANA.glob("provisioning/dashboards/*.yaml")
        for p in load_yaml(f)["providers"]
    ]
    mounts = compose()["services"]["grafana"]["volumes"]
    assert any(m.startswith("./collector-config/grafana/dashboards:" + paths[0]) for m in mounts)


# --- ports -------------------------------------------------------------------------------------


def test_collector_otlp_receiver_ports() -> None:
    """The OTLP receiver listens on 4317 (gRPC) and 4318 (HTTP), and compose publishes both."""
    protocols = collector()["receivers"]["otlp"]["protocols"]
    assert endpoint_port(protocols["grpc"]["endpoint"]) == OTLP_GRPC_PORT
    assert endpoint_port(protocols["http"]["endpoint"]) == OTLP_HTTP_PORT
    ports = [(host, inside) for _, host, inside in published(REQUIRED)["collector"]]
    for port in (OTLP_GRPC_PORT, OTLP_HTTP_PORT):
        assert (str(port), str(port)) in ports, ports


def test_prometheus_exporter_port_and_labels() -> None:
    """The prometheus exporter is on 8889, scraped there, no resource_to_telemetry_conversion."""
    exporter = collector()["exporters"]["prometheus"]
    assert endpoint_port(exporter["endpoint"]) == COLLECTOR_PROMETHEUS_PORT
    conversion = exporter.get("resource_to_telemetry_conversion", {})
    assert not conversion.get("enabled", False), "would duplicate markov_recording_id etc."
    targets = [
        t
        for job in load_yaml(PROMETHEUS)["scrape_configs"]
        for sc in job.get("static_configs", [])
        for t in sc["targets"]
    ]
    assert f"collector:{COLLECTOR_PROMETHEUS_PORT}" in targets, targets


def test_prometheus_scrapes_a_recorder_endpoint_on_the_host() -> None:
    """prometheus.yml scrapes the recorder's own endpoint port; compose resolves the host name."""
    port = recorder_scrape_port()
    targets = [
        t
        for job in load_yaml(PROMETHEUS)["scrape_configs"]
        for sc in job.get("static_configs", [])
        for t in sc["targets"]
    ]
    assert f"host.docker.internal:{port}" in targets, targets
    assert "host.docker.internal:host-gateway" in compose()["services"]["prometheus"]["extra_hosts"]
    if OTEL_DOC.exists():
        assert str(port) in OTEL_DOC.read_text(encoding="utf-8")


def serve_defaults() -> dict[str, int | None]:
    """The backend's port as each place in the code defaults it."""
    import inspect

    from markov_otel import config
    from markov_otel.cli import main
    from markov_otel.server import __main__ as server_main
    from markov_otel.server import runner

    mkv_serve = main.build_parser().parse_args(["serve"]).port
    return {
        "config.DEFAULT_ENDPOINT": urlsplit(config.DEFAULT_ENDPOINT).port,
        "mkv serve --port": mkv_serve,
        "python -m markov_otel.server --port": server_main.build_parser().parse_args([]).port,
        "runner.serve(port=)": inspect.signature(runner.serve).parameters["port"].default,
    }


def test_markov_backend_port_agrees_everywhere() -> None:
    """The port the code defaults to (the recorder's endpoint, both serve commands, serve()) is
    one port, and it is what compose, the Dockerfile and the collector's exporter use."""
    defaults = serve_defaults()
    assert len(set(defaults.values())) == 1, defaults
    (port,) = set(defaults.values())
    assert port == backend_port()
    svc = compose()["services"]["markov"]
    cmd = svc["command"]
    assert cmd[:2] == ["mkv", "serve"] and cmd[cmd.index("--port") + 1] == str(port)
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"
    assert cmd[cmd.index("--db") + 1].startswith("postgresql://")
    assert [(h, c) for _, h, c in published(REQUIRED)["markov"]] == [(str(port), str(port))]
    assert re.search(rf"^EXPOSE {port}$", DOCKERFILE.read_text(encoding="utf-8"), re.M)
    exporter = collector()["exporters"]["otlp_http/markov"]
    assert exporter["endpoint"] == f"http://markov:{port}"


def test_markov_exporter_sends_the_api_key_from_the_environment() -> None:
    """otlp_http/markov sends Bearer ${env:MARKOV_API_KEY}; compose sets that variable."""
    headers = collector(keep=("MARKOV_API_KEY",))["exporters"]["otlp_http/markov"]["headers"]
    assert headers["Authorization"] == "Bearer ${env:MARKOV_API_KEY}"
    assert "MARKOV_API_KEY" in compose()["services"]["collector"]["environment"]
    assert "MARKOV_SERVER_TOKENS" in compose()["services"]["markov"]["environment"]


# --- the collector's wiring ----------------------------------------------------------------------


def test_collector_pipelines_use_only_defined_components() -> None:
    """Every pipeline names defined components, and every defined component is used somewhere;
    live pipelines open with memory_limiter and close with batch."""
    cfg = collector()
    connectors = set(cfg.get("connectors", {}))
    used: dict[str, set[str]] = {"receivers": set(), "processors": set(), "exporters": set()}
    for name, pipeline in cfg["service"]["pipelines"].items():
        assert name.split("/")[0] in {"metrics", "traces", "logs"}, name
        assert pipeline["receivers"] and pipeline["exporters"], name
        for kind in used:
            for component in pipeline.get(kind, []):
                known = component in cfg[kind] or (kind != "processors" and component in connectors)
                assert known, f"{name} uses undefined {kind[:-1]} {component}"
                used[kind].add(component)
        if "otlp" in pipeline["receivers"]:
            assert pipeline["processors"][0] == "memory_limiter", f"{name}: memory_limiter first"
            assert pipeline["processors"][-1].split("/")[0] == "batch", f"{name}: batch last"
    for kind, names in used.items():
        assert set(cfg[kind]) == names - connectors, f"unused {kind}: {set(cfg[kind]) - names}"
    assert connectors <= used["receivers"] & used["exporters"], connectors
    assert set(cfg["service"]["extensions"]) == set(cfg["extensions"])


def test_exact_points_never_reach_prometheus() -> None:
    """Pipelines exporting to Prometheus drop points carrying markov.step (one series per step)."""
    cfg = collector()
    for name, pipeline in cfg["service"]["pipelines"].items():
        if "prometheus" not in pipeline["exporters"]:
            continue
        assert "otlp" in pipeline["receivers"] and len(pipeline["receivers"]) == 1, name
        conditions = [
            c
            for p in pipeline["processors"]
            if p.startswith("filter")
            for c in cfg["processors"][p]["metrics"]["datapoint"]
        ]
        assert 'attributes["markov.step"] != nil' in conditions, name


def test_traces_go_to_the_compose_traces_backend() -> None:
    """The traces exporter targets the compose Jaeger service's OTLP gRPC port."""
    cfg = collector()
    endpoint = cfg["exporters"]["otlp_grpc/jaeger"]["endpoint"]
    host, port = endpoint.rsplit(":", 1)
    assert host in compose()["services"] and int(port) == OTLP_GRPC_PORT
    assert "otlp_grpc/jaeger" in cfg["service"]["pipelines"]["traces"]["exporters"]


def parse_byte_size(value: str | int) -> int:
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"(\d+)\s*([KMG]i?B)?", value.strip(), re.I)
    assert m, value
    unit = (m.group(2) or "").lower()
    base = 1024 if "i" in unit else 1000
    power = {"": 0, "k": 1, "m": 2, "g": 3}[unit[:1]]
    return int(m.group(1)) * base**power


def replay_receivers(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in cfg["receivers"].items() if k.split("/")[0] == "file_log"}


def test_run_files_replay_from_the_beginning_with_offsets_and_whole_lines() -> None:
    """The run-file receiver starts at the beginning, keeps offsets in file_storage, takes 8 MiB
    lines, never emits a partial last line, and retries a refusal instead of dropping it."""
    cfg = collector()
    receivers = replay_receivers(cfg)
    assert len(receivers) == 1, receivers
    for name, rcv in receivers.items():
        assert rcv["start_at"] == "beginning", name
        assert rcv["storage"] in cfg["service"]["extensions"], name
        assert rcv["storage"].split("/")[0] == "file_storage", name
        assert parse_byte_size(rcv["max_log_size"]) > 8 * 1024 * 1024, name
        assert str(rcv["force_flush_period"]) in {"0", "0s"}, f"{name} would emit torn lines"
        retry = rcv["retry_on_failure"]
        assert retry["enabled"] and str(retry["max_elapsed_time"]) in {"0", "0s"}, name


def test_replayed_lines_reach_the_persistent_queue_without_a_batch_in_between() -> None:
    """file_log -> otlp_json -> otlp_http/markov: every replayed signal ends in the Markov exporter,
    whose queue is on file_storage and blocks when full; no batch processor holds lines in memory
    after the reader has moved its offset past them."""
    cfg = collector()
    pipelines = cfg["service"]["pipelines"]
    (receiver,) = replay_receivers(cfg)
    (reading,) = [p for p in pipelines.values() if receiver in p["receivers"]]
    assert reading["exporters"] == ["otlp_json"] and reading.get("processors") == ["memory_limiter"]
    replays = {n: p for n, p in pipelines.items() if "otlp_json" in p["receivers"]}
    assert {n.split("/")[0] for n in replays} == {"metrics", "traces", "logs"}
    for name, pipeline in replays.items():
        assert pipeline.get("processors", []) == [], name
        assert "otlp_http/markov" in pipeline["exporters"], name
    queue = cfg["exporters"]["otlp_http/markov"]["sending_queue"]
    assert queue["enabled"] and queue["storage"] == "file_storage" and queue["block_on_overflow"]


def test_collector_starts_with_the_synchronous_reader_everywhere() -> None:
    """compose, the tests and the config's header start the collector with the feature gate that
    makes the file reader hand each line on before saving its offset."""
    gate = "--feature-gates=stanza.synchronousLogEmitter"
    assert gate in compose()["services"]["collector"]["command"]
    assert gate in COLLECTOR.read_text(encoding="utf-8")
    assert gate in (ROOT / "tests" / "collector_fixture.py").read_text(encoding="utf-8")
    assert gate in OTEL_DOC.read_text(encoding="utf-8")


def test_run_file_include_matches_the_run_dir_layout(tmp_path: Path) -> None:
    """The include globs pick exactly <recording_id>/<signal>.jsonl of every signal from a run
    dir, under the directory compose mounts the runs at (the variable's default)."""
    spool = module_constants("markov_otel/shipping/spool.py")
    signals = spool.get("SIGNALS", ("metrics", "traces", "logs"))
    default_dir = module_constants("markov_otel/config.py").get("DEFAULT_DIR", "markov-runs")
    runs = tmp_path / default_dir
    files: set[Path] = set()
    for rid in ("0f" * 16, "my-run_1.2"):
        run = runs / rid
        run.mkdir(parents=True)
        for extra in (
            spool.get("RECORDING_FILE", "recording.json"),
            spool.get("ACKS_FILE", "acks.json"),
            "requirements.txt",
        ):
            (run / extra).write_text("{}\n")
        for signal in signals:
            (run / f"{signal}.jsonl").write_text("{}\n")
            files.add(run / f"{signal}.jsonl")

    mounts = compose()["services"]["collector"]["volumes"]
    mount = next(m for m in mounts if m.startswith(f"./{default_dir}:"))
    container_dir = mount.split(":")[1]
    assert collector_variables()["MARKOV_RUNS_DIR"] == container_dir
    (rcv,) = replay_receivers(collector()).values()
    matched: set[Path] = set()
    for pattern in rcv["include"]:
        assert pattern.startswith(container_dir + "/"), pattern
        matched |= {Path(p) for p in glob.glob(str(runs) + pattern[len(container_dir) :])}
    assert matched == files
    moved = replay_receivers(collector({"MARKOV_RUNS_DIR": str(runs)}))
    (rcv,) = moved.values()
    assert {Path(p) for pattern in rcv["include"] for p in glob.glob(pattern)} == files


def test_collector_paths_and_endpoints_come_from_variables_with_compose_defaults() -> None:
    """Every path and endpoint of the collector config is a ${env:...} variable; the defaults
    are what compose mounts and publishes; MARKOV_API_KEY is the one without a default."""
    variables = collector_variables()
    assert variables.pop("MARKOV_API_KEY") is None
    assert all(default for default in variables.values()), variables
    cfg = collector(keep=tuple(variables))
    places = [
        cfg["extensions"]["health_check"]["endpoint"],
        cfg["extensions"]["file_storage"]["directory"],
        cfg["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"],
        cfg["receivers"]["otlp"]["protocols"]["http"]["endpoint"],
        *[p for r in replay_receivers(cfg).values() for p in r["include"]],
        *[e["endpoint"] for e in cfg["exporters"].values() if "endpoint" in e],
    ]
    for place in places:
        assert COLLECTOR_VARIABLE.match(place), f"{place!r} is not set by a variable"
    mounts = {m.split(":")[1] for m in compose()["services"]["collector"]["volumes"]}
    assert variables["MARKOV_COLLECTOR_STORAGE"] in mounts
    assert variables["MARKOV_RUNS_DIR"] in mounts
    assert variables["MARKOV_ENDPOINT"] == f"http://markov:{backend_port()}"


# --- compose -----------------------------------------------------------------------------------


def test_every_image_is_pinned() -> None:
    """Every compose image and the Dockerfile's base have an explicit tag that is not latest."""
    services = compose()["services"]
    for needed in ("collector", "prometheus", "grafana", "jaeger", "postgres", "markov"):
        assert needed in services, f"compose lacks {needed}"
    images = []
    for name, svc in services.items():
        if "image" in svc:
            images.append(svc["image"])
        else:
            assert "build" in svc, f"{name} has neither image nor build"
    images += re.findall(r"^FROM\s+(\S+)", DOCKERFILE.read_text(encoding="utf-8"), re.M)
    for image in images:
        name, _, tag = image.rpartition(":")
        assert name and "/" not in tag and tag and tag != "latest", f"unpinned image {image}"
    plugins = services["grafana"]["environment"].get("GF_INSTALL_PLUGINS", "")
    for plugin in filter(None, plugins.split(",")):
        assert len(plugin.split()) == 2, f"unpinned Grafana plugin {plugin!r}"


MANIFEST = CONFIG_DIR / "builder-config.yaml"
BUILD_SH = CONFIG_DIR / "build.sh"


def test_our_distribution_is_one_release_and_compose_runs_the_same() -> None:
    """Every module of builder-config.yaml is at the release build.sh installs the builder at
    (core and contrib v0.X.Y, stable core modules v1.Z.0 of the same release), and compose's
    collector image is the contrib image of that release."""
    release = re.search(r"^release=(v\S+)", BUILD_SH.read_text(encoding="utf-8"), re.M)
    assert release, "build.sh names no release="
    manifest = load_yaml(MANIFEST)
    versions: dict[str, set[str]] = {}
    for kind in ("receivers", "processors", "exporters", "connectors", "extensions", "providers"):
        for module in manifest[kind]:
            _, version = module["gomod"].split()
            versions.setdefault("v1" if version.startswith("v1.") else "v0", set()).add(version)
    assert versions["v0"] == {release.group(1)}, versions
    assert len(versions["v1"]) == 1, versions  # the stable modules released beside it
    image = compose()["services"]["collector"]["image"]
    assert image == f"otel/opentelemetry-collector-contrib:{release.group(1)[1:]}", image


def test_our_distribution_has_exactly_the_components_the_config_uses() -> None:
    """builder-config.yaml builds every component type otel-collector.yaml names, and no other."""
    cfg = collector()
    manifest = load_yaml(MANIFEST)
    used = {
        name.split("/")[0]
        for kind in ("receivers", "processors", "exporters", "connectors", "extensions")
        for name in cfg.get(kind, {})
    }
    built = {
        module["gomod"].split()[0].rsplit("/", 1)[1]
        for kind in ("receivers", "processors", "exporters", "connectors", "extensions")
        for module in manifest[kind]
    }
    module_of = {
        "otlp": {"otlpreceiver"},
        "otlp_grpc": {"otlpexporter"},
        "otlp_http": {"otlphttpexporter"},
        "batch": {"batchprocessor"},
        "memory_limiter": {"memorylimiterprocessor"},
        "filter": {"filterprocessor"},
        "file_log": {"filelogreceiver"},
        "otlp_json": {"otlpjsonconnector"},
        "prometheus": {"prometheusexporter"},
        "debug": {"debugexporter"},
        "health_check": {"healthcheckextension"},
        "file_storage": {"filestorage"},
    }
    assert used == set(module_of), used ^ set(module_of)
    assert built == set().union(*module_of.values()), built


def test_compose_bind_mounts_exist_and_build_uses_the_dockerfile() -> None:
    """Every ./collector-config bind mount exists, and markov builds from its Dockerfile."""
    services = compose()["services"]
    for svc in services.values():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./collector-config"):
                assert (ROOT / source).exists(), source
    build = services["markov"]["build"]
    assert (ROOT / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r'pip install "?/src\[server\]"?', text), "Dockerfile must install [server]"
    assert services["markov"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_promtool_accepts_prometheus_yml() -> None:
    """`promtool check config collector-config/prometheus.yml` succeeds."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus)")
    result = subprocess.run(
        [promtool, "check", "config", str(PROMETHEUS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_user_doc_names_the_settings_the_code_reads() -> None:
    """docs/opentelemetry.md's MARKOV_* variables all exist in config.py, and it gives the ports."""
    text = OTEL_DOC.read_text(encoding="utf-8")
    config_py = ROOT / "markov_otel" / "config.py"
    source = config_py.read_text(encoding="utf-8") if config_py.exists() else ""
    known = set(re.findall(r'"(MARKOV_[A-Z_]+)"', source))
    known |= {"MARKOV_API_KEY", "MARKOV_ENDPOINT", "MARKOV_DIR", "MARKOV_SERVER_TOKENS"}
    known |= {"MARKOV_PROMETHEUS_ADDR"}  # read where the scrape endpoint starts (otel/providers.py)
    known |= set(collector_variables())  # the collector config's own variables
    known |= {"MARKOV_OTELCOL"}  # the built collector, for its tests (tests/collector_fixture.py)
    known |= set(re.findall(r"\$\{(MARKOV_[A-Z_]+)", COMPOSE.read_text(encoding="utf-8")))
    mentioned = set(re.findall(r"\bMARKOV_[A-Z_]+\b", text))
    assert mentioned and mentioned <= known, mentioned - known
    for port in (OTLP_GRPC_PORT, OTLP_HTTP_PORT, COLLECTOR_PROMETHEUS_PORT, backend_port()):
        assert str(port) in text, port
    assert (
        "protocol.md" in text and "otlpjsonfile" in text and "OTEL_EXPORTER_OTLP_ENDPOINT" in text
    )


# --- safe defaults: no default secret, loopback ports, no anonymous Grafana ---------------------

REQUIRED = {"MARKOV_API_KEY": "k-" + "7" * 30, "GRAFANA_ADMIN_PASSWORD": "g-" + "5" * 20}


class ComposeRefused(Exception):
    """What `docker compose` says when a `${VAR:?message}` variable is not set."""


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable interpolation: `$$`, `$VAR`, `${VAR}`, `${VAR:-default}`,
    `${VAR-default}`, `${VAR:?error}`, `${VAR?error}`, defaults themselves interpolated."""
    out, i = [], 0
    while i < len(text):
        bare = re.match(r"\$([A-Za-z_][A-Za-z0-9_]*)", text[i:])
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("${", i):
            end = _closing_brace(text, i + 2)
            out.append(_substitute(text[i + 2 : end], env))
            i = end + 1
        elif bare:
            out.append(env.get(bare.group(1), ""))
            i += bare.end()
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _closing_brace(text: str, start: int) -> int:
    """The index of the `}` that closes a `${` whose body starts at `start` (nesting counted)."""
    depth = 1
    for j in range(start, len(text)):
        if text.startswith("${", j):
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    raise AssertionError(f"unclosed ${{ at {start}")


def _substitute(inner: str, env: dict[str, str]) -> str:
    m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])(.*))?", inner, re.S)
    assert m, f"not a compose variable: ${{{inner}}}"
    name, op, rest = m.group(1), m.group(2), m.group(3) or ""
    value = env.get(name)
    unset = value is None or (op is not None and op.startswith(":") and value == "")
    if op in (":-", "-") and unset:
        return interpolate(rest, env)
    if op in (":?", "?") and unset:
        raise ComposeRefused(f"required variable {name} is missing a value: {rest}")
    return value or ""


def resolved_compose(env: dict[str, str]) -> dict[str, Any]:
    return yaml.safe_load(interpolate(COMPOSE.read_text(encoding="utf-8"), env))


def published(env: dict[str, str]) -> dict[str, list[tuple[str, str, str]]]:
    """service -> [(host ip, host port, container port)] of every published port."""
    out: dict[str, list[tuple[str, str, str]]] = {}
    for name, svc in resolved_compose(env)["services"].items():
        for entry in svc.get("ports", []):
            parts = str(entry).split(":")
            assert len(parts) == 3, f"{name} publishes {entry!r} without a host address"
            out.setdefault(name, []).append((parts[0], parts[1], parts[2]))
    return out


def test_the_interpolation_helper_follows_compose() -> None:
    """Control for the tests below: defaults, required variables and nesting resolve as in
    compose."""
    env = {"A": "a", "EMPTY": ""}
    assert interpolate("${A} $A ${B:-x} ${EMPTY:-d} ${EMPTY-d} $$A", env) == "a a x d  $A"
    assert interpolate("${B:-${A:-z}}", env) == "a"
    with pytest.raises(ComposeRefused, match="B"):
        interpolate("${B:?set B}", env)
    with pytest.raises(ComposeRefused, match="EMPTY"):
        interpolate("${EMPTY:?set it}", env)


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_compose_refuses_to_start_without_each_secret(missing: str) -> None:
    """Without MARKOV_API_KEY or GRAFANA_ADMIN_PASSWORD compose stops, naming the variable."""
    env = {k: v for k, v in REQUIRED.items() if k != missing}
    with pytest.raises(ComposeRefused, match=missing):
        resolved_compose(env)
    with pytest.raises(ComposeRefused, match=missing):
        resolved_compose({**env, missing: ""})
    resolved_compose(REQUIRED)  # with both, it resolves


def test_no_well_known_secret_anywhere_in_the_stack() -> None:
    """No fallback token or password: every secret the services get is the one the user set."""
    text = COMPOSE.read_text(encoding="utf-8")
    assert "markov-dev-token" not in text
    services = resolved_compose(REQUIRED)["services"]
    key = REQUIRED["MARKOV_API_KEY"]
    assert services["collector"]["environment"]["MARKOV_API_KEY"] == key
    assert services["grafana"]["environment"]["MARKOV_API_KEY"] == key
    assert services["markov"]["environment"]["MARKOV_SERVER_TOKENS"] == key
    own = resolved_compose({**REQUIRED, "MARKOV_SERVER_TOKENS": "t1,t2:proj"})
    assert own["services"]["markov"]["environment"]["MARKOV_SERVER_TOKENS"] == "t1,t2:proj"
    grafana = services["grafana"]["environment"]
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"] == REQUIRED["GRAFANA_ADMIN_PASSWORD"]


def test_published_ports_are_on_loopback_unless_the_user_says_otherwise() -> None:
    """Every published port binds 127.0.0.1; MARKOV_BIND_ADDRESS=0.0.0.0 opens them all."""
    ports = published(REQUIRED)
    assert {"collector", "prometheus", "jaeger", "grafana", "markov"} <= set(ports)
    assert "postgres" not in ports  # reachable only inside the compose network
    assert {ip for entries in ports.values() for ip, _, _ in entries} == {"127.0.0.1"}
    opened = published({**REQUIRED, "MARKOV_BIND_ADDRESS": "0.0.0.0"})
    assert {ip for entries in opened.values() for ip, _, _ in entries} == {"0.0.0.0"}
    assert sum(map(len, opened.values())) == sum(map(len, ports.values()))


def test_grafana_has_no_anonymous_access() -> None:
    """Grafana asks for a login: anonymous access and sign-up are off."""
    env = resolved_compose(REQUIRED)["services"]["grafana"]["environment"]
    assert str(env.get("GF_AUTH_ANONYMOUS_ENABLED", "false")).lower() == "false"
    assert "GF_AUTH_ANONYMOUS_ORG_ROLE" not in env
    assert str(env.get("GF_USERS_ALLOW_SIGN_UP", "false")).lower() == "false"


def test_stack_docs_say_how_to_start_it_safely() -> None:
    """docs/opentelemetry.md starts the stack with both secrets and names the bind variable."""
    text = OTEL_DOC.read_text(encoding="utf-8")
    for name in (*REQUIRED, "MARKOV_BIND_ADDRESS"):
        assert name in text, name
    assert "anonymous viewer" not in text
