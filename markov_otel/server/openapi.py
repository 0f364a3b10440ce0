"""The OpenAPI 3.0 document served at /openapi.json, written by hand to match protocol.md.

Sizes follow `markov_otel.rules` (in UTF-8 bytes there; `maxLength` here counts characters, so
it is the byte limit, an upper bound). Nesting depth (rules.MAX_DEPTH) is stated in descriptions.
"""

from __future__ import annotations

from typing import Any

from markov_otel import rules
from markov_otel.server.records import ID_PATTERN

__all__ = ["openapi_document"]

_STR = {"type": "string"}
_OBJ = {"type": "object", "additionalProperties": True}
_KEY_FILTER = {
    "name": "key",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "pattern": "^[^\\x00]*$"},
}
# Strings the backend stores as columns: no NUL (PostgreSQL text cannot hold it); null means "".
_TEXT = {
    "type": "string",
    "pattern": "^[^\\x00]*$",
    "maxLength": rules.MAX_NAME_BYTES,
    "nullable": True,
}
_LONG_TEXT = {**_TEXT, "maxLength": rules.MAX_TEXT_BYTES}
_PARAMS_NOTE = (
    f"at most {rules.MAX_DEPTH} levels deep and {rules.MAX_PARAMS_BYTES} bytes as JSON; "
    "stored and read back flat, nested keys joined with '.'"
)
_NULLABLE_OBJ = {**_OBJ, "nullable": True}
_PARAMS = {**_NULLABLE_OBJ, "description": _PARAMS_NOTE}
_TIME = {
    "type": "string",
    "format": "date-time",
    "nullable": True,
    "description": "ISO 8601 with a zone, e.g. 2025-05-01T05:09:00Z; read back as UTC",
}
_STORED_TIME = {"type": "string", "nullable": True}
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
            **{f: _TEXT for f in ("name", "project_id", "dataset_id", "model_class")},
            "notes": _LONG_TEXT,
            "model_id": _TEXT,
            "metadata": _PARAMS,
            "hyper_parameters": _PARAMS,
            "started_at": _TIME,
            "ended_at": _TIME,
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
            "hyper_parameters": _PARAMS,
            "summary": _PARAMS,
            "metadata": _PARAMS,
            "status": {
                **_TEXT,
                "description": "set as given: an explicit PATCH may move a finished recording "
                "back to running (a resume); a batch's resource status never does",
            },
            "notes": _LONG_TEXT,
            "name": _TEXT,
            "tags": {
                "type": "array",
                "items": {"type": "string", "minLength": 1, "pattern": "\\S"},
                "maxItems": 50,
                "nullable": True,
                "description": "replaces the recording's tags",
            },
            "archived": {"type": "boolean", "nullable": True},
            "requirements": _NULLABLE_OBJ,
            "started_at": _TIME,
            "ended_at": _TIME,
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
            "started_at": _STORED_TIME,
            "ended_at": _STORED_TIME,
            "experiment_url": _STR,
            "last_step": {
                "type": "integer",
                "nullable": True,
                "description": "the highest stored step (register and get only)",
            },
            "tags": {"type": "array", "items": _STR},
            "archived": {"type": "boolean"},
        },
    },
    "Limits": {
        "type": "object",
        "required": [
            "max_body_bytes",
            "max_name_bytes",
            "max_text_bytes",
            "max_params_bytes",
            "max_depth",
            "max_idempotency_key",
        ],
        "properties": {
            "max_body_bytes": {"type": "integer"},
            "max_artifact_bytes": {"type": "integer"},
            "artifact_part_bytes": {"type": "integer"},
            "max_name_bytes": {"type": "integer"},
            "max_text_bytes": {"type": "integer"},
            "max_params_bytes": {"type": "integer"},
            "max_depth": {"type": "integer"},
            "max_idempotency_key": {"type": "integer"},
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


_PACKED = {"type": "string", "format": "byte", "description": "base64 of a little-endian array"}
_SCHEMAS["History"] = {
    "type": "object",
    "required": ["max_points", "runs"],
    "properties": {
        "max_points": {"type": "integer", "nullable": True},
        "runs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["recording_id", "keys"],
                "properties": {
                    "recording_id": _STR,
                    "keys": {
                        "type": "object",
                        "additionalProperties": {
                            "type": "object",
                            "required": ["n", "step", "value", "time"],
                            "properties": {
                                "n": {"type": "integer", "minimum": 0},
                                "step": {**_PACKED, "description": "int64 steps, base64"},
                                "value": {**_PACKED, "description": "float64 values, base64"},
                                "time": {**_PACKED, "description": "int64 ns times, base64"},
                            },
                        },
                    },
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
                "200": _json(
                    _ref("Series"),
                    "at most max_points points per recording, by step; "
                    "ids x max_points may be at most 100000",
                ),
                **_NOT_MODIFIED,
                **_errors(400, 404),
            },
        }
    }


def _quantiles() -> dict[str, Any]:
    """GET /api/v1/quantiles."""
    answer = {
        "type": "object",
        "description": "key, quantiles [0.05, 0.25, 0.5, 0.75, 0.95], and series: per recording "
        "{recording_id, name, steps, values: per step the quantiles' values, or null}",
    }
    return {
        "get": {
            "summary": "the quantiles of one distribution key by step (at most 200 steps a "
            "recording), estimated from the stored buckets; an unknown id, or one of a project "
            "the token may not see, is a 404",
            "parameters": [
                _query(
                    "ids", {"type": "string", "description": "comma-separated, at most 100"}, True
                ),
                _query("key", {"type": "string", "minLength": 1, "pattern": "^[^\\x00]*$"}, True),
            ],
            "responses": {
                "200": _json(answer, "per recording, steps and quantiles"),
                **_errors(400, 404),
            },
        }
    }


def _history() -> dict[str, Any]:
    """GET /api/v1/history."""
    key = {"type": "string", "minLength": 1, "pattern": "^[^\\x00]*$"}
    return {
        "get": {
            "summary": "every point of some keys (default: all) of several recordings, by step "
            "then time: JSON of base64 arrays, or with Accept: application/x-markov-history "
            "binary frames of records (docs/protocol.md); max_points downsamples each key as "
            "/api/v1/series does; an unknown id, or one of a project the token may not see, is a "
            "404",
            "parameters": [
                _query(
                    "ids", {"type": "string", "description": "comma-separated, at most 100"}, True
                ),
                {**_query("key", {"type": "array", "items": key}), "explode": True},
                _query("max_points", {"type": "integer", "minimum": 10, "maximum": 100000}),
            ],
            "responses": {
                "200": {
                    "description": "each recording's keys as arrays",
                    "content": {
                        "application/json": {"schema": _ref("History")},
                        "application/x-markov-history": {
                            "schema": {"type": "string", "format": "binary"}
                        },
                    },
                },
                **_errors(400, 404),
            },
        }
    }


# Answers a live page repeats carry a weak ETag; presented in If-None-Match: 304 until it changes.
_NOT_MODIFIED = {"304": {"description": "unchanged since the ETag given in If-None-Match"}}


def _fresh(operation: dict[str, Any]) -> dict[str, Any]:
    operation["responses"] = {**operation["responses"], **_NOT_MODIFIED}
    return operation


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _errors(*codes: int) -> dict[str, Any]:
    reasons = {
        400: "malformed request (the reason is in error)",
        401: "missing or wrong bearer token",
        403: "token scoped to another project (writes to a recording of another project)",
        404: "unknown recording, or one of a project this token may not see (same answer)",
        409: "the digest is not stored yet (upload its parts and commit first)",
        413: "body larger than max_body_bytes (GET /api/v1/limits)",
        408: "the body arrived too slowly (the server's --body-timeout and --min-body-rate); "
        "the connection is closed",
        415: "unsupported content type or encoding",
        422: "Idempotency-Key already used in this recording for a different body",
        503: "too many request bodies in progress or arriving, or this project holds its share "
        "of them; retry after Retry-After seconds",
    }
    out = {str(c): _json(_ref("Error"), reasons[c]) for c in (401, *codes)}
    if "503" in out:
        out["503"]["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
    return out


def _read(summary: str, schema: dict[str, Any], *params: dict[str, Any]) -> dict[str, Any]:
    return {
        "summary": summary,
        "parameters": [_RECORDING_ID, *params],
        "responses": {"200": _json(schema, summary), **_errors(400, 404)},
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
                "description": "opaque to the server; scoped to the batch's recording(s) and "
                "bound to the SHA-256 of the decoded body: the same key and body again is a "
                "replay (200, nothing stored), the same key with another body 422",
                "schema": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": rules.MAX_IDEMPOTENCY_KEY,
                    "pattern": "\\S",
                },
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
            **_errors(400, 403, 408, 413, 415, 422, 503),
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
                        **_errors(400, 403, 408, 413, 503),
                    },
                },
                "get": {
                    "summary": "list recordings, newest start first (started_at, else created_at)",
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
                "get": _fresh(_read("the recording", recording)),
                "patch": {
                    "summary": "merge hyperparameters/summary, set status/notes/requirements; "
                    "from a page, with the sign-in cookie instead of a bearer token: only name, "
                    "notes and tags, and only with the page's CSRF token in X-Markov-CSRF (403 "
                    "naming the reason otherwise)",
                    "parameters": [_RECORDING_ID],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("Patch")}},
                    },
                    "responses": {
                        "200": _json(recording, "the updated recording"),
                        **_errors(400, 403, 404, 408, 413, 503),
                    },
                },
                "delete": {
                    "summary": "delete the recording and everything of it (points, alerts, "
                    "events); a token scoped to a project only deletes that project's",
                    "parameters": [_RECORDING_ID],
                    "responses": {"204": {"description": "deleted"}, **_errors(400, 404, 503)},
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
            "/api/v1/recordings/{recording_id}/distributions": {
                "get": _read(
                    "recorded arrays: one ExponentialHistogram point (key, step, time_unix_nano, "
                    "count, sum, min, max, zero_count, scale, positive and negative {offset, "
                    "bucket_counts}, nan_count, posinf_count, neginf_count; attributes when "
                    "the point has others), each identity once, by step then time",
                    {"type": "array", "items": _OBJ},
                    _KEY_FILTER,
                ),
            },
            "/api/v1/recordings/{recording_id}/texts": {
                "get": _read(
                    "recorded texts (key, step, time_unix_nano, text), each (key, step, "
                    "time) once, by step then time",
                    {"type": "array", "items": _OBJ},
                    _KEY_FILTER,
                ),
            },
            "/api/v1/recordings/{recording_id}/requirements": {
                "get": _read("the stored environment.json", _OBJ),
            },
            "/api/v1/series": _series(),
            "/api/v1/quantiles": _quantiles(),
            "/api/v1/history": _history(),
            "/api/v1/runs-table": {
                "get": _fresh(
                    {
                        "summary": "the runs table's rows (as the page embeds them: flat "
                        "parameters, summary, tags, archived) and every key; an open runs table "
                        "asks with its ETag and gets 304 until a recording changes",
                        "parameters": [_query("project_id", _TEXT)],
                        "responses": {
                            "200": _json({"type": "object"}, "the rows and the keys"),
                            **_errors(400, 403),
                        },
                    }
                )
            },
            "/api/v1/limits": {
                "get": {
                    "summary": "what this server accepts: body size, text sizes, parameter "
                    "size and depth, Idempotency-Key length",
                    "responses": {"200": _json(_ref("Limits"), "the limits"), **_errors()},
                }
            },
            **_artifact_paths(),
            "/v1/metrics": {"post": _otlp("metrics")},
            "/v1/traces": {"post": _otlp("traces")},
            "/v1/logs": {"post": _otlp("logs")},
        },
    }


_DIGEST = {
    "name": "digest",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$"},
}


def _path_param(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


_NAME = _path_param("name", {"type": "string"})
_BYTES = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}


def _artifact_paths() -> dict[str, Any]:
    """The artifact routes (protocol.md "Artifacts"): chunked upload by digest, list, download."""
    one = "/api/v1/recordings/{recording_id}/artifacts"
    entry = {"type": "object", "required": ["digest"], "properties": {"digest": {"type": "string"}}}
    return {
        "/api/v1/blobs/{digest}": {
            "get": _op("which parts of an upload are held, or whether it is stored", [_DIGEST]),
            "post": _op("commit: the parts make {size} bytes of this SHA-256", [_DIGEST], _OBJ),
        },
        "/api/v1/blobs/{digest}/parts/{index}": {
            "put": {
                **_op(
                    "one part (at most artifact_part_bytes), idempotent",
                    [
                        _DIGEST,
                        {
                            "name": "index",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "integer", "minimum": 0},
                        },
                    ],
                ),
                "requestBody": {"required": True, "content": _BYTES},
            },
        },
        one: {"get": _read("the recording's artifacts", {"type": "array", "items": _OBJ})},
        one + "/{name}": {
            "get": {
                "summary": "an artifact's bytes (Range answered with 206)",
                "parameters": [_RECORDING_ID, _NAME],
                "responses": {
                    "200": {"description": "the bytes", "content": _BYTES},
                    **_errors(400, 404),
                },
            },
            "put": {
                **_op("name stored bytes under the recording", [_RECORDING_ID, _NAME], entry),
                "responses": {"200": _json(_OBJ, "the artifact"), **_errors(400, 404, 409)},
            },
        },
        "/api/v1/models/{model_id}": {
            "get": _op(
                "the recording and artifact behind a model_id",
                [
                    {
                        "name": "model_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
            ),
        },
    }


def _op(summary: str, params: list[dict[str, Any]], body: Any = None) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "parameters": params,
        "responses": {"200": _json(_OBJ, summary), **_errors(400, 404, 413)},
    }
    if body is not None:
        op["requestBody"] = {"required": True, **_json(body, "JSON body")}
    return op
