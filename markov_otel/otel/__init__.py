"""The OpenTelemetry side: OTLP encoding, the experiment's resource, private providers."""
