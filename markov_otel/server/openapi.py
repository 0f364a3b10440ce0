"""The OpenAPI 3.0 document served at /openapi.json, written by hand to match protocol.md."""

from __future__ import annotations

from typing import Any

from markov_otel.server.records import ID_PATTERN

__all__ = ["openapi_document"]

_STR = {"type": "string"}
_OBJ = {"type": "object", "additionalProperties": True}
# Strings the backend stores as columns: no NUL (PostgreSQL text cannot hold it); null means "".
_TEXT = {"type": "string", "pattern": "^[^\\x00]*$", "nullable": True}
_NULLABLE_OBJ = {**_OBJ, "nullable": True}
_VALUE = {
    "oneOf": [{"type": "number"}, {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]}]
}
_ERROR = {"type": "object", "properties": {"error": _STR}, "required": ["error"]}
_RECORDING_ID = {
    "name": "recording_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": ID_PATTERN},
}

_SCHEMAS: dict[str, Any] = {
    "Error": _ERROR,
    "Registration": {
        "type": "object",
        "required": ["recording_id"],
        "properties": {
            "recording_id": {"type": "string", "pattern": ID_PATTERN},
            **{f: _TEXT for f in ("name", "project_id", "notes", "dataset_id", "model_class")},
            "model_id": _TEXT,
            "metadata": _NULLABLE_OBJ,
            "hyper_parameters": _NULLABLE_OBJ,
        },
    },
    "Alert": {
        "type": "object",
        "required": ["alert_id"],
        "properties": {
            "alert_id": {"type": "string", "minLength": 1, "pattern": "^[^\\x00]*$"},
            "metric_name": _STR,
            "operation": _STR,
            "threshold": _VALUE,
            "text": _STR,
            "value": _VALUE,
            "step": {"type": "integer"},
            "time_unix_nano": {"type": "integer"},
        },
    },
    "Patch": {
        "type": "object",
        "properties": {
            "hyper_parameters": _NULLABLE_OBJ,
            "summary": _NULLABLE_OBJ,
            "metadata": _NULLABLE_OBJ,
            "status": _TEXT,
            "notes": _TEXT,
            "requirements": _NULLABLE_OBJ,
            "alerts": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/Alert"},
                "nullable": True,
            },
        },
    },
    "Recording": {
        "type": "object",
        "required": ["recording_id", "model_id", "experiment_url", "keys", "points", "status"],
        "properties": {
            "recording_id": _STR,
            **{f: _STR for f in ("name", "project_id", "notes", "dataset_id", "model_class")},
            "model_id": _STR,
            "metadata": _OBJ,
            "hyper_parameters": _OBJ,
            "summary": _OBJ,
            "status": _STR,
            "keys": {"type": "array", "items": _STR},
            "points": {"type": "integer"},
            "created_at": _STR,
            "updated_at": _STR,
            "experiment_url": _STR,
        },
    },
    "Record": {
        "type": "object",
        "required": ["step", "value", "time_unix_nano"],
        "properties": {
            "step": {"type": "integer"},
            "value": _VALUE,
            "time_unix_nano": {"type": "integer"},
        },
    },
}

_POINT = {
    "type": "array",
    "description": "[step, value, time_unix_nano]; value is a number or a non-finite string",
    "items": {"oneOf": [{"type": "integer"}, _VALUE]},
    "minItems": 3,
    "maxItems": 3,
}
_SCHEMAS["Series"] = {
    "type": "object",
    "required": ["key", "max_points", "series"],
    "properties": {
        "key": _STR,
        "max_points": {"type": "integer"},
        "series": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["recording_id", "name", "status", "points", "bucket_steps", "last"],
                "properties": {
                    "recording_id": _STR,
                    "name": _STR,
                    "status": _STR,
                    "points": {"type": "array", "items": _POINT},
                    "bucket_steps": {"type": "integer", "minimum": 1},
                    "first_step": {"type": "integer", "nullable": True},
                    "last": {**_POINT, "nullable": True},
                },
            },
        },
    },
}


def _query(name: str, schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema}


_INT64 = {"type": "integer", "format": "int64"}


def _series() -> dict[str, Any]:
    """GET /api/v1/series."""
    return {
        "get": {
            "summary": "one key of several recordings, downsampled in the database (min/max per "
            "step bucket, first non-finite point per bucket); an unknown id, or one of a project "
            "the token may not see, is a 404",
            "parameters": [
                _query(
                    "ids", {"type": "string", "description": "comma-separated, at most 100"}, True
                ),
                _query("key", {"type": "string", "minLength": 1, "pattern": "^[^\\x00]*$"}, True),
                _query("max_points", {"type": "integer", "minimum": 10, "maximum": 100000}),
                _query("since_step", {**_INT64, "description": "only points after this step"}),
                _query("min_step", _INT64),
                _query("max_step", _INT64),
            ],
            "responses": {
                "200": _json(_ref("Series"), "at most max_points points per recording, by step"),
                **_errors(400, 404),
            },
        }
    }


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _errors(*codes: int) -> dict[str, Any]:
    reasons = {
        400: "malformed request (the reason is in error)",
        401: "missing or wrong bearer token",
        403: "token scoped to another project",
        404: "unknown recording",
        413: "body too large",
        415: "unsupported content type or encoding",
    }
    return {str(c): _json(_ref("Error"), reasons[c]) for c in (401, *codes)}


def _read(summary: str, schema: dict[str, Any], *params: dict[str, Any]) -> dict[str, Any]:
    return {
        "summary": summary,
        "parameters": [_RECORDING_ID, *params],
        "responses": {"200": _json(schema, summary), **_errors(400, 403, 404)},
    }


def _otlp(signal: str) -> dict[str, Any]:
    body = {"schema": {"type": "string", "format": "binary"}}
    return {
        "summary": f"OTLP/HTTP {signal} export (ExportServiceRequest, JSON or protobuf, gzip ok)",
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "minLength": 1, "maxLength": 512, "pattern": "\\S"},
            },
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _OBJ}, "application/x-protobuf": body},
        },
        "responses": {
            "200": {
                "description": "stored (or a repeated Idempotency-Key: nothing stored)",
                "content": {"application/json": {"schema": _OBJ}, "application/x-protobuf": body},
            },
            **_errors(400, 403, 413, 415),
        },
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of the backend."""
    recording = _ref("Recording")
    return {
        "openapi": "3.0.3",
        "info": {"title": "markov_otel reference backend", "version": "1"},
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/v1/recordings": {
                "post": {
                    "summary": "register a recording (idempotent on recording_id)",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("Registration")}},
                    },
                    "responses": {
                        "201": _json(recording, "registered"),
                        "200": _json(recording, "already registered"),
                        **_errors(400, 403, 413),
                    },
                },
                "get": {
                    "summary": "list recordings, newest first",
                    "parameters": [
                        {"name": "project_id", "in": "query", "required": False, "schema": _TEXT}
                    ],
                    "responses": {
                        "200": _json({"type": "array", "items": recording}, "recordings"),
                        **_errors(400, 403),
                    },
                },
            },
            "/api/v1/recordings/{recording_id}": {
                "get": _read("the recording", recording),
                "patch": {
                    "summary": "merge hyperparameters/summary, set status/notes/requirements",
                    "parameters": [_RECORDING_ID],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("Patch")}},
                    },
                    "responses": {
                        "200": _json(recording, "the updated recording"),
                        **_errors(400, 403, 404, 413),
                    },
                },
            },
            "/api/v1/recordings/{recording_id}/records": {
                "get": _read(
                    "the points of one key, by step then time",
                    {"type": "array", "items": _ref("Record")},
                    {
                        "name": "key",
                        "in": "query",
                        "required": True,
                        "schema": {"type": "string", "minLength": 1, "pattern": "^[^\\x00]*$"},
                    },
                ),
            },
            "/api/v1/recordings/{recording_id}/alerts": {
                "get": _read("alerts in firing order", {"type": "array", "items": _ref("Alert")}),
            },
            "/api/v1/recordings/{recording_id}/requirements": {
                "get": _read("the stored environment.json", _OBJ),
            },
            "/api/v1/series": _series(),
            "/v1/metrics": {"post": _otlp("metrics")},
            "/v1/traces": {"post": _otlp("traces")},
            "/v1/logs": {"post": _otlp("logs")},
        },
    }
