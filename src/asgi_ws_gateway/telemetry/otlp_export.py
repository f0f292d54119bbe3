"""The SDK's OTLP span exporters with the gateway's encoder (:mod:`.otlp_wire`) in place of theirs.

Everything else is the SDK exporter's own: endpoint, headers, timeout, compression, TLS
certificates (the ``OTEL_EXPORTER_OTLP_*`` variables), retries, channel or session. Only the step
that turns a batch into bytes changes: the SDK builds protobuf message objects attribute by
attribute (about half of a traced handshake's CPU); :class:`~.otlp_wire.SpanEncoder` writes the
same bytes directly.

These subclasses reach into the exporters' private members (the gRPC stub, the HTTP client). When
an SDK version lacks what they use, they log once and leave the SDK's encoding in place: spans are
never lost to a version mismatch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as SdkGrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as SdkHttpSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from .names import HTTP_STATUS
from .otlp_wire import SpanEncoder

logger = logging.getLogger(__name__)

_EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


class _BytesTraceStub:
    """The generated ``TraceServiceStub`` without its request serializer: the request is the bytes."""

    def __init__(self, channel: Any) -> None:
        self.Export = channel.unary_unary(
            _EXPORT_METHOD, request_serializer=None, response_deserializer=ExportTraceServiceResponse.FromString
        )


class GrpcSpanExporter(SdkGrpcSpanExporter):
    """OTLP/gRPC: the SDK exporter, whose request is already-encoded bytes sent by a raw stub."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._encoder: SpanEncoder | None = None
        super().__init__(*args, **kwargs)
        if isinstance(getattr(self, "_client", None), _BytesTraceStub):
            self._encoder = SpanEncoder()
        else:
            logger.warning("this OpenTelemetry SDK's gRPC exporter is unknown to the gateway: its own encoder is used")

    def _initialize_channel_and_stub(self) -> None:  # also where the SDK reconnects after UNAVAILABLE
        super()._initialize_channel_and_stub()  # type: ignore[no-untyped-call]
        # The SDK types its stub attribute as None until set: this is the one it calls Export on.
        self._client = _BytesTraceStub(self._channel)  # type: ignore[assignment]

    def _translate_data(self, data: Sequence[ReadableSpan]) -> Any:
        if self._encoder is None:
            return super()._translate_data(data)
        return self._encoder.encode(data)


class HttpSpanExporter(SdkHttpSpanExporter):
    """OTLP/HTTP (protobuf): the SDK exporter, posting bytes from the gateway's encoder."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        known = all(hasattr(self, name) for name in ("_client", "_shutdown", "_metrics", "_max_request_size"))
        self._encoder: SpanEncoder | None = SpanEncoder() if known and hasattr(self._client, "export") else None
        if self._encoder is None:
            logger.warning("this OpenTelemetry SDK's HTTP exporter is unknown to the gateway: its own encoder is used")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        encoder = self._encoder
        if encoder is None:
            return super().export(spans)
        if self._shutdown:
            logger.warning("exporter already shut down, batch dropped")
            return SpanExportResult.FAILURE
        with self._metrics.export_operation(len(spans)) as result:  # the SDK's own exporter metrics
            try:
                data = encoder.encode(spans)
            except Exception as error:  # a bug here must cost the batch, not the processor's thread
                logger.exception("failed to encode a span batch")
                result.error = error
                return SpanExportResult.FAILURE
            if 0 < self._max_request_size < len(data):
                logger.warning("span batch dropped: %d bytes, over max_request_size", len(data))
                return SpanExportResult.FAILURE
            sent = self._client.export(data)
            if not sent.success:
                result.error = sent.error
                if sent.status_code is not None:
                    result.error_attrs = {HTTP_STATUS: sent.status_code}
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS


__all__ = ["GrpcSpanExporter", "HttpSpanExporter"]
