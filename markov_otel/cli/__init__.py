"""`mkv`: the command line (main) and what it shows (display, progress_bar, export).

The top of the house: it imports from every other folder but `server/`'s internals (only
`markov_otel.server.serve`), and nothing imports it.
"""
