"""The training thread's side: the recorder and what it checks and keeps on the caller's thread.

recorder (lifecycle, the add_record hot path), values, summary, arguments, alerts, notices,
distributed (torchrun ranks) and system_metrics. Imports go down to `shipping/`, `otel/`,
`environments/` and the shared ground (config, errors, rules, weather, process); never up to
`cli/` or `server/`.
"""
