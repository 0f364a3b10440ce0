"""What writes, keeps and sends the run dir: batches leave the recorder here.

flusher (the background thread) and encoder_process (its helper process) turn records into OTLP
lines in the spool; acks keeps per-backend offsets; sender and transport deliver lines to the
Markov backend; runs reads a run dir back for `mkv runs` and `mkv sync`. Imports go down to
`otel/` and the shared ground, never to `recording/`'s recorder, `cli/` or `server/`.
"""
