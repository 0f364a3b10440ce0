"""The training thread's side: the recorder and what it checks and keeps on the caller's thread.

recorder (the public class and the add_record hot path) with its parts (lifecycle, background,
registration, steps, environment: mixins, each importing only those below it), values, arrays,
images, artifacts, watch, summary, arguments, alerts, notices, distributed (torchrun ranks) and
system_metrics. Imports go down to `shipping/`, `otel/`, `environments/` and the shared ground
(config, errors, rules, weather, process); never up to `cli/` or `server/`.
"""
