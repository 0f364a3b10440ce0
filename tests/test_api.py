"""The public API: names, properties, settings, lifecycle, the context manager and the summary."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from otlp_files import closed_port, last_resource, points, recording, spans

import markov_otel
from markov_otel import (
    BinaryOperation,
    ConfigError,
    ExperimentAlertCondition,
    ExperimentRecorder,
    ExperimentSummary,
    MarkovError,
    ModelClass,
    RecorderStateError,
    RecordingMode,
)
from markov_otel.cli.main import main

OFFLINE = RecordingMode.OFFLINE


def offline(name: str = "exp", **kwargs: object) -> ExperimentRecorder:
    return ExperimentRecorder(name=name, recording_mode=OFFLINE, **kwargs)


# -- the seed's docstring example --------------------------------------------------------------


@pytest.mark.parametrize("how", ["env", "mkv"])
def test_seed_example_runs_as_written_offline(
    how: str, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The seed docstring example runs unchanged once offline is chosen by MARKOV_MODE or mkv."""
    if how == "env":
        monkeypatch.setenv("MARKOV_MODE", "offline")
    else:
        assert main(["mode", "offline"]) == 0

    recorder = ExperimentRecorder(name="my_experiment_recorder")
    recorder.register()  # register the recorder with MarkovML to start logging records
    with recorder:
        # training loop
        recorder.add_record({"loss": 0.9})
        recorder.summary.add_training_loss("0.23")
        recorder.summary.add_validation_loss("0.29")

    run = isolated / recorder.recording_id
    info = recording(run)
    assert info["mode"] == "offline"
    assert info["status"] == "finished"
    assert info["summary"] == {"training_loss": 0.23, "validation_loss": 0.29}
    assert [(p.key, p.step, p.value) for p in points(run)] == [("loss", 0, 0.9)]
    assert last_resource(run)["markov.summary.training_loss"] == 0.23


def test_mode_defaults_to_offline_when_no_endpoint_is_configured() -> None:
    """Without recording_mode, MARKOV_MODE, a config file or an endpoint anywhere, there is no
    backend to send to: the recorder records locally (OFFLINE)."""
    assert ExperimentRecorder(name="x").config["recording_mode"] is OFFLINE


@pytest.mark.parametrize("how", ["argument", "env", "file"])
def test_mode_defaults_to_online_when_an_endpoint_is_configured(
    how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no mode set, an endpoint given anywhere (argument, MARKOV_ENDPOINT, config file)
    makes the recorder ONLINE to it, as before."""
    url = "http://127.0.0.1:9"
    kwargs = {"endpoint": url} if how == "argument" else {}
    if how == "env":
        monkeypatch.setenv("MARKOV_ENDPOINT", url)
    if how == "file":
        assert main(["config", "set", "endpoint", url]) == 0
    recorder = ExperimentRecorder(name="x", **kwargs)
    assert recorder.config["recording_mode"] is RecordingMode.ONLINE
    assert recorder.config["endpoint"] == url


def test_mode_follows_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A recorder built without recording_mode follows MARKOV_MODE."""
    monkeypatch.setenv("MARKOV_MODE", "OFFLINE")
    assert ExperimentRecorder(name="x").config["recording_mode"] is OFFLINE


def test_mode_follows_config_file_and_env_beats_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """`mkv mode offline` is followed; MARKOV_MODE overrides the file; an argument beats both."""
    assert main(["mode", "offline"]) == 0
    assert ExperimentRecorder(name="x").config["recording_mode"] is OFFLINE
    monkeypatch.setenv("MARKOV_MODE", "online")
    assert ExperimentRecorder(name="x").config["recording_mode"] is RecordingMode.ONLINE
    explicit = ExperimentRecorder(name="x", recording_mode=OFFLINE)
    assert explicit.config["recording_mode"] is OFFLINE


def test_online_without_a_server_never_raises(
    isolated: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """ONLINE with nobody listening records to disk, stops cleanly and names `mkv sync`."""
    sock, port = closed_port()
    with sock:
        monkeypatch.setenv("MARKOV_ENDPOINT", f"http://127.0.0.1:{port}")
        recorder = ExperimentRecorder(
            name="online",
            register_batch_timeout=0.5,
            sync_data_timeout=0.5,
            batch_processing_interval=0.05,
        )
        assert recorder.config["recording_mode"] is RecordingMode.ONLINE
        with caplog.at_level(logging.WARNING, logger="markov_otel"), recorder:
            for i in range(5):
                recorder.add_record({"loss": 1.0 / (i + 1)})
    run = isolated / recorder.recording_id
    assert recording(run)["status"] == "finished"
    assert [p.step for p in points(run)] == [0, 1, 2, 3, 4]
    assert f"mkv sync {recorder.recording_id}" in caplog.text


def test_invalid_mode_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unknown recording mode (argument or MARKOV_MODE) is refused naming the value."""
    with pytest.raises(ConfigError, match="sideways"):
        ExperimentRecorder(name="x", recording_mode="sideways")  # type: ignore[arg-type]
    monkeypatch.setenv("MARKOV_MODE", "upside")
    with pytest.raises(ConfigError, match="upside"):
        ExperimentRecorder(name="x")


# -- public names and properties ---------------------------------------------------------------


def test_public_names_are_pinned() -> None:
    """`markov_otel.__all__` is exactly the documented public surface, and every name exists."""
    assert sorted(markov_otel.__all__) == [
        "AlertReader",
        "BackendError",
        "BinaryOperation",
        "ConfigError",
        "ExperimentAlertCondition",
        "ExperimentRecorder",
        "ExperimentSummary",
        "Image",
        "MarkovError",
        "ModelClass",
        "RecorderStateError",
        "RecordingMode",
        "__version__",
    ]
    for name in markov_otel.__all__:
        assert getattr(markov_otel, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'Recorder'"):
        markov_otel.Recorder  # noqa: B018  (a name that is not there fails as usual)


def test_error_tree() -> None:
    """ConfigError is a ValueError and RecorderStateError a RuntimeError, both MarkovErrors."""
    assert issubclass(ConfigError, ValueError) and issubclass(ConfigError, MarkovError)
    assert issubclass(RecorderStateError, RuntimeError)
    assert issubclass(RecorderStateError, MarkovError)
    assert issubclass(markov_otel.BackendError, MarkovError)


def test_enums() -> None:
    """RecordingMode, BinaryOperation and ModelClass hold the documented members."""
    assert {m.name for m in RecordingMode} == {"ONLINE", "OFFLINE"}
    assert {op.value for op in BinaryOperation} == {"<", "<=", ">", ">=", "==", "!="}
    assert BinaryOperation.LESS_THAN == "<"
    assert {"CLASSIFICATION", "REGRESSION", "CLUSTERING", "OTHER"} <= {m.name for m in ModelClass}


def test_version_matches_package_metadata() -> None:
    """__version__ is the installed distribution's version."""
    from importlib.metadata import version

    assert markov_otel.__version__ == version("markov-otel")


def test_properties(isolated: Path) -> None:
    """Every documented property returns what the recorder was built with or generated."""
    recorder = ExperimentRecorder(
        name="props",
        project_id="proj-1",
        notes="some notes",
        dataset_id="ds-9",
        model_class=ModelClass.REGRESSION,
        recording_mode=OFFLINE,
        batch_size=7,
    )
    assert recorder.name == "props"
    assert recorder.project_id == "proj-1"
    assert recorder.notes == "some notes"
    assert re.fullmatch(r"[0-9a-f]{32}", recorder.recording_id)
    assert re.fullmatch(r"model-[0-9a-f]{16}", recorder.model_id)
    assert isinstance(recorder.summary, ExperimentSummary)
    assert recorder.config["batch_size"] == 7
    assert recorder.config["recording_mode"] is OFFLINE
    assert recorder.config["run_dir"] == str(isolated / recorder.recording_id)
    assert "api_key" not in recorder.config
    assert recorder.experiment_url == (isolated / recorder.recording_id).resolve().as_uri()


def test_defaults_of_optional_arguments() -> None:
    """Optional arguments default as documented (README and the class docstring): empty
    project, no notes, batch_size 1000, interval 1 s, register 10 s, sync 30 s, 4 MiB batches."""
    recorder = offline("d")
    assert recorder.project_id == ""
    assert recorder.notes is None
    documented = {
        "batch_size": 1000,
        "batch_processing_interval": 1.0,
        "register_batch_timeout": 10.0,
        "sync_data_timeout": 30.0,
        "max_batch_bytes": 4 * 1024 * 1024,
    }
    assert {k: recorder.config[k] for k in documented} == documented


def test_documented_methods_exist() -> None:
    """Every method of the documented API is there and callable."""
    recorder = offline()
    for name in (
        "register",
        "start",
        "stop",
        "add_record",
        "add_hyper_parameters",
        "attach_alert_on",
        "upsert_package_requirements",
        "create_experiment_requirements_file",
        "create_experiment_virtualenv",
        "create_experiment_conda_environment",
        "__enter__",
        "__exit__",
    ):
        assert callable(getattr(recorder, name)), name


def test_identity_reaches_recording_json_and_resource(isolated: Path) -> None:
    """project, dataset, model class, notes and metadata are in recording.json and the Resource."""
    recorder = ExperimentRecorder(
        name="ident",
        project_id="p1",
        notes="n1",
        dataset_id="d1",
        model_class="regression",  # type: ignore[arg-type]
        metadata={"owner": "ana"},
        recording_mode=OFFLINE,
    )
    with recorder:
        recorder.add_record({"loss": 1.0})
    run = isolated / recorder.recording_id
    info = recording(run)
    assert (info["project_id"], info["dataset_id"], info["notes"]) == ("p1", "d1", "n1")
    assert info["model_class"] == "regression"
    assert info["metadata"] == {"owner": "ana"}
    attrs = last_resource(run)
    assert attrs["markov.recording.id"] == recorder.recording_id
    assert attrs["markov.recording.name"] == "ident"
    assert attrs["markov.project.id"] == "p1"
    assert attrs["markov.dataset.id"] == "d1"
    assert attrs["markov.model.class"] == "regression"
    assert attrs["markov.model.id"] == recorder.model_id
    assert attrs["markov.notes"] == "n1"
    assert attrs["markov.metadata.owner"] == "ana"
    assert attrs["service.name"] == "markov-experiment"


def test_service_name_from_otel_env(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_SERVICE_NAME names the service in the Resource."""
    monkeypatch.setenv("OTEL_SERVICE_NAME", "trainer")
    with offline() as recorder:
        recorder.add_record({"loss": 1.0})
    assert last_resource(isolated / recorder.recording_id)["service.name"] == "trainer"


def test_recording_id_extra_resumes_existing_recording(isolated: Path) -> None:
    """recording_id= resumes a recording: same dir, hparams kept, steps continue."""
    with offline(hyper_parameters={"lr": 0.1}) as first:
        first.add_record({"loss": 1.0})
        first.add_record({"loss": 0.9})
    with offline(recording_id=first.recording_id) as second:
        second.add_record({"loss": 0.8})
    run = isolated / first.recording_id
    assert second.model_id == first.model_id
    assert [p.step for p in points(run)] == [0, 1, 2]
    assert last_resource(run)["markov.hparam.lr"] == 0.1


# -- kwargs validation -------------------------------------------------------------------------


def test_unknown_kwarg_is_refused_by_name() -> None:
    """An unknown keyword argument is a ConfigError that names it."""
    with pytest.raises(ConfigError, match="batchsize"):
        offline(batchsize=10)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("batch_size", 0),
        ("batch_size", -5),
        ("batch_size", 2.5),
        ("batch_size", True),
        ("batch_size", "100"),
        ("batch_processing_interval", 0),
        ("batch_processing_interval", -1.0),
        ("register_batch_timeout", 0),
        ("sync_data_timeout", -0.1),
        ("sync_data_timeout", None),
    ],
)
def test_non_positive_queue_config_is_refused(key: str, value: object) -> None:
    """A queue setting that is not a positive number is a ConfigError naming key and value."""
    with pytest.raises(ConfigError) as err:
        offline(**{key: value})
    assert f"{key}={value!r}" in str(err.value)


def test_valid_queue_config_is_kept() -> None:
    """Positive queue settings are taken as given (a whole float batch_size becomes an int)."""
    recorder = offline(
        batch_size=10.0, batch_processing_interval=2, register_batch_timeout=3, sync_data_timeout=4
    )
    assert recorder.config["batch_size"] == 10 and type(recorder.config["batch_size"]) is int
    assert recorder.config["batch_processing_interval"] == 2.0
    assert recorder.config["register_batch_timeout"] == 3.0
    assert recorder.config["sync_data_timeout"] == 4.0


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"name": ""}, "name=''"),
        ({"name": None}, "name=None"),
        ({"name": "x", "model_class": "astrology"}, "astrology"),
        ({"name": "x", "hyper_parameters": [1, 2]}, "hyper_parameters"),
        ({"name": "x", "metadata": "m"}, "metadata"),
        ({"name": "x", "recording_id": "../escape"}, "../escape"),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs: dict[str, object], named: str) -> None:
    """A bad constructor argument is a ConfigError naming the value, raised before any I/O."""
    with pytest.raises(ConfigError) as err:
        ExperimentRecorder(recording_mode=OFFLINE, **kwargs)  # type: ignore[arg-type]
    assert named in str(err.value)


def test_nothing_is_written_before_register(isolated: Path) -> None:
    """Building a recorder creates no run dir; register() does."""
    recorder = offline()
    assert not isolated.exists()
    recorder.register()
    assert (isolated / recorder.recording_id / "recording.json").is_file()
    assert recording(isolated / recorder.recording_id)["status"] == "registered"


# -- lifecycle ---------------------------------------------------------------------------------


def test_add_record_before_start_raises() -> None:
    """add_record before start() is a RecorderStateError that says to call start()."""
    recorder = offline()
    with pytest.raises(RecorderStateError, match=r"start\(\)"):
        recorder.add_record({"loss": 1.0})
    recorder.register()
    with pytest.raises(RecorderStateError):
        recorder.add_record({"loss": 1.0})


def test_add_record_after_stop_raises(isolated: Path) -> None:
    """add_record after stop() is a RecorderStateError and adds nothing to disk."""
    recorder = offline()
    recorder.start()
    recorder.add_record({"loss": 1.0})
    recorder.stop()
    with pytest.raises(RecorderStateError, match=r"after stop\(\)"):
        recorder.add_record({"loss": 2.0})
    assert [p.value for p in points(isolated / recorder.recording_id)] == [1.0]


def test_start_twice_raises() -> None:
    """start() on a running recorder is a RecorderStateError; the run keeps recording."""
    recorder = offline()
    recorder.start()
    try:
        with pytest.raises(RecorderStateError, match="already started"):
            recorder.start()
        recorder.add_record({"loss": 1.0})
    finally:
        recorder.stop()


def test_start_after_stop_raises() -> None:
    """A stopped recorder cannot be restarted; the message names recording_id= to resume."""
    recorder = offline()
    recorder.start()
    recorder.stop()
    with pytest.raises(RecorderStateError, match=recorder.recording_id):
        recorder.start()


def test_stop_twice_is_harmless(isolated: Path) -> None:
    """A second stop() does nothing: no error, no extra batch, status unchanged."""
    recorder = offline()
    recorder.start()
    recorder.add_record({"loss": 1.0})
    recorder.stop()
    run = isolated / recorder.recording_id
    before = (run / "metrics.jsonl").read_bytes()
    recorder.stop()
    recorder.stop(status="failed")
    assert (run / "metrics.jsonl").read_bytes() == before
    assert recording(run)["status"] == "finished"


def test_stop_before_start_raises() -> None:
    """stop() on a recorder that never started is a RecorderStateError."""
    recorder = offline()
    with pytest.raises(RecorderStateError, match="never started"):
        recorder.stop()
    recorder.register()
    with pytest.raises(RecorderStateError):
        recorder.stop()


def test_register_twice_is_harmless(isolated: Path) -> None:
    """register() twice keeps one run dir, and start() after it works."""
    recorder = offline()
    recorder.register()
    recorder.register()
    with recorder:
        recorder.add_record({"loss": 1.0})
    assert [p.name for p in isolated.iterdir()] == [recorder.recording_id]


def test_stop_writes_a_final_batch_with_nothing_pending(isolated: Path) -> None:
    """A run with no records still ends with a metrics batch carrying the final Resource."""
    recorder = offline(hyper_parameters={"lr": 0.01})
    recorder.start()
    recorder.summary.add_number_of_epochs(3)
    recorder.stop()
    attrs = last_resource(isolated / recorder.recording_id)
    assert attrs["markov.status"] == "finished"
    assert attrs["markov.hparam.lr"] == 0.01
    assert attrs["markov.summary.number_of_epochs"] == 3
    assert points(isolated / recorder.recording_id) == []


# -- context manager ---------------------------------------------------------------------------


def test_context_manager_finishes(isolated: Path) -> None:
    """`with recorder:` starts and stops; the run is finished in recording.json and Resource."""
    recorder = offline()
    with recorder as entered:
        assert entered is recorder
        recorder.add_record({"loss": 1.0})
    run = isolated / recorder.recording_id
    assert recording(run)["status"] == "finished"
    assert last_resource(run)["markov.status"] == "finished"
    (span,) = spans(run)
    assert span.name == "experiment exp"
    assert span.status.code == 1  # STATUS_CODE_OK
    with pytest.raises(RecorderStateError):
        recorder.add_record({"loss": 2.0})


@pytest.mark.parametrize(
    ("exc_type", "status"), [(ValueError, "failed"), (KeyboardInterrupt, "interrupted")]
)
def test_context_manager_marks_failed_or_interrupted_on_exception(
    isolated: Path, exc_type: type[BaseException], status: str
) -> None:
    """An exception escaping `with recorder:` propagates and marks the run failed (Ctrl-C:
    interrupted), not finished."""
    recorder = offline()
    with pytest.raises(exc_type), recorder:
        recorder.add_record({"loss": 1.0})
        raise exc_type("boom")
    run = isolated / recorder.recording_id
    assert recording(run)["status"] == status
    assert last_resource(run)["markov.status"] == status
    assert [p.value for p in points(run)] == [1.0]
    (span,) = spans(run)
    assert span.status.code == 2  # STATUS_CODE_ERROR


def test_context_manager_sys_exit_zero_is_finished(isolated: Path) -> None:
    """sys.exit(0) inside the block is a normal end: finished."""
    recorder = offline()
    with pytest.raises(SystemExit), recorder:
        raise SystemExit(0)
    assert recording(isolated / recorder.recording_id)["status"] == "finished"


def test_context_manager_after_explicit_start(isolated: Path) -> None:
    """`with` on a recorder already started does not start it twice and still stops it."""
    recorder = offline()
    recorder.start()
    with recorder:
        recorder.add_record({"loss": 1.0})
    assert recording(isolated / recorder.recording_id)["status"] == "finished"


# -- hyperparameters and summary ---------------------------------------------------------------


def test_hyperparameters_and_summary_on_last_batch(isolated: Path) -> None:
    """Hparams added at any time and the summary are resource attributes of the last batch."""
    recorder = offline(hyper_parameters={"lr": 0.001, "opt": {"name": "adam", "beta": 0.9}})
    with recorder:
        recorder.add_record({"loss": 1.0})
        recorder.add_hyper_parameters({"epochs": 10, "lr": 0.002})
        recorder.summary.add_training_loss(0.3)
        recorder.summary.add_validation_loss("0.35")
        recorder.summary.add_training_accuracy(0.9)
        recorder.summary.add_validation_accuracy("0.88")
        recorder.summary.add_number_of_epochs("10")
        recorder.summary.add("best_checkpoint", "ckpt-7")
        recorder.summary.add("f1", "0.5")
    run = isolated / recorder.recording_id
    attrs = last_resource(run)
    assert attrs["markov.hparam.lr"] == 0.002
    assert attrs["markov.hparam.epochs"] == 10
    assert attrs["markov.hparam.opt.name"] == "adam"
    assert attrs["markov.hparam.opt.beta"] == 0.9
    assert attrs["markov.summary.training_loss"] == 0.3
    assert attrs["markov.summary.validation_loss"] == 0.35
    assert attrs["markov.summary.training_accuracy"] == 0.9
    assert attrs["markov.summary.validation_accuracy"] == 0.88
    assert attrs["markov.summary.number_of_epochs"] == 10
    assert attrs["markov.summary.best_checkpoint"] == "ckpt-7"
    assert attrs["markov.summary.f1"] == 0.5
    info = recording(run)
    assert info["hyper_parameters"]["lr"] == 0.002
    assert info["summary"]["number_of_epochs"] == 10


def test_hyperparameters_are_copied(isolated: Path) -> None:
    """Mutating a dict after passing it as hyperparameters changes nothing recorded."""
    params = {"lr": 0.1, "opt": {"beta": 0.9}}
    with offline(hyper_parameters=params) as recorder:
        params["lr"] = 99.0
        params["opt"]["beta"] = 99.0  # type: ignore[index]
        params["new"] = 1
        recorder.add_record({"loss": 1.0})
    attrs = last_resource(isolated / recorder.recording_id)
    assert attrs["markov.hparam.lr"] == 0.1
    assert attrs["markov.hparam.opt.beta"] == 0.9
    assert "markov.hparam.new" not in attrs


def test_bad_hyperparameters_are_refused() -> None:
    """Hyperparameters must be a dict with non-empty string names."""
    recorder = offline()
    with pytest.raises(ConfigError):
        recorder.add_hyper_parameters(["lr", 0.1])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="5"):
        recorder.add_hyper_parameters({5: 0.1})  # type: ignore[dict-item]


def test_summary_values() -> None:
    """Named summary methods take numbers and numeric strings; add() takes any key and text."""
    summary = ExperimentSummary()
    summary.add_training_loss("0.23")
    summary.add_validation_loss(0.29)
    summary.add_number_of_epochs("12")
    summary.add("note", "best run")
    summary.add("count", "3")
    assert summary.to_dict() == {
        "training_loss": 0.23,
        "validation_loss": 0.29,
        "number_of_epochs": 12,
        "note": "best run",
        "count": 3,
    }
    assert summary.get("training_loss") == 0.23
    assert summary.get("missing") is None


@pytest.mark.parametrize(
    ("method", "value"),
    [
        ("add_training_loss", "low"),
        ("add_validation_accuracy", None),
        ("add_training_accuracy", True),
        ("add_number_of_epochs", 2.5),
        ("add_number_of_epochs", -1),
    ],
)
def test_summary_refuses_non_numbers(method: str, value: object) -> None:
    """A named summary method refuses what is not a number, naming the value."""
    with pytest.raises(ConfigError, match=re.escape(repr(value))):
        getattr(ExperimentSummary(), method)(value)


def test_summary_refuses_empty_key() -> None:
    """summary.add needs a non-empty string key."""
    with pytest.raises(ConfigError):
        ExperimentSummary().add("", 1.0)


# -- alert conditions --------------------------------------------------------------------------


def test_alert_condition_validation() -> None:
    """A condition needs a metric name, a known operation and a number; '<' works as well."""
    condition = ExperimentAlertCondition("loss", "<", 0.25)  # type: ignore[arg-type]
    assert condition.operation is BinaryOperation.LESS_THAN
    assert ExperimentAlertCondition("loss", BinaryOperation.EQUAL, "1").metric_value == 1.0  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="~"):
        ExperimentAlertCondition("loss", "~", 0.25)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="abc"):
        ExperimentAlertCondition("loss", BinaryOperation.LESS_THAN, "abc")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        ExperimentAlertCondition("", BinaryOperation.LESS_THAN, 1.0)


def test_attach_alert_validation() -> None:
    """attach_alert_on refuses what is not a condition, and a text that is not a string."""
    recorder = offline()
    with pytest.raises(ConfigError):
        recorder.attach_alert_on(("loss", "<", 1), "text")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        recorder.attach_alert_on(ExperimentAlertCondition("loss", "<", 1), 42)  # type: ignore[arg-type]
