"""The export_points mirror over OTLP/gRPC (OTEL_EXPORTER_OTLP_PROTOCOL=grpc).

A spool line is one OTLP-JSON MetricsData; here it becomes one ExportMetricsServiceRequest on the
collector's gRPC port (4317). `GrpcPointsClient` has the face of `BackendClient` (`base`, `call`,
`close`), so the sender ships, retries and acknowledges lines exactly as over HTTP. gRPC codes map
to the sender's two outcomes as the OTLP specification says: the retryable ones (UNAVAILABLE,
RESOURCE_EXHAUSTED, ...) are a `Retry`, every other a `Refused` line (set aside, as an HTTP 400).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import grpc
from google.protobuf.json_format import Parse as parse_json
from google.protobuf.json_format import ParseError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2_grpc import MetricsServiceStub

from markov_otel.shipping.transport import Refused, Retry

if TYPE_CHECKING:
    from markov_otel.shipping.transport import Target

RETRYABLE = frozenset(
    {
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
"""The codes the OTLP specification calls retryable."""


class GrpcPointsClient:
    """One channel to the collector's OTLP/gRPC receiver; `call` exports one spool line."""

    def __init__(self, target: Target, timeout: float) -> None:
        self.base, self.timeout = target.base, timeout
        parts = urlsplit(target.base if "://" in target.base else f"http://{target.base}")
        address = parts.netloc
        if parts.scheme == "https":
            roots = Path(target.verify).read_bytes() if isinstance(target.verify, str) else None
            self._channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(roots))
        else:
            self._channel = grpc.insecure_channel(address)
        self._export = MetricsServiceStub(self._channel).Export
        self._metadata = tuple((k.lower(), v) for k, v in target.headers.items())

    def call(self, method: str, path: str, *, timeout: float | None = None, **kwargs: Any) -> Any:
        """Export the line in `data` (the path and method are the HTTP sender's, unused here)."""
        data = kwargs.get("data", b"")
        try:
            request = parse_json(bytes(data).decode("utf-8"), ExportMetricsServiceRequest())
        except (ParseError, UnicodeDecodeError) as exc:
            raise Refused(f"not an OTLP-JSON metrics line: {exc}", 400) from exc
        try:
            self._export(request, timeout=timeout or self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            code = exc.code()
            reason = f"gRPC {code.name} from {self.base}: {exc.details()}"
            if code in RETRYABLE:
                raise Retry(reason, unreachable=code is grpc.StatusCode.UNAVAILABLE) from exc
            raise Refused(reason, 400) from exc
        return {}

    def close(self) -> None:
        self._channel.close()
