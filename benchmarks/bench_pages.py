"""The pages a team opens every day, with a 20-run sweep: timings and screenshots.

Run: python benchmarks/bench_pages.py [--runs 20] [--steps 20000] [--sqlite PATH]
         [--screenshots DIR] [--repeat 3]

Stores a sweep through the store's own ingest (kept in --sqlite between runs): per run 20,000
steps of train/loss, train/acc, val/loss, val/acc, lr (1e-3 decaying to 1e-6) and grad_norm, and
7 system metrics sampled every 100 steps (CPU and memory utilisation, memory in bytes), then
starts `python -m markov_otel.server` on it and opens, in headless Chromium (Playwright on
/usr/bin/chromium), the runs table and the comparison of all runs: the median time until each
page says it is drawn (data-runs-ready / data-charts-ready), the page height, and screenshots.
Baseline: GET /api/v1/recordings over HTTP, the same command, as a ratio.
Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench_series import start_backend

from markov_otel.server.storage import SeriesPoints, open_store

TOKEN = "bench-token"
T0 = 1_700_000_000_000_000_000
SYSTEM = {
    "system.cpu.utilization/state.user": lambda s, n: 0.4 + 0.1 * math.sin(s / 900 + n),
    "system.cpu.utilization/state.system": lambda s, n: 0.05 + 0.01 * math.sin(s / 700),
    "system.cpu.utilization/state.iowait": lambda s, n: 0.002 + 0.001 * math.sin(s / 500),
    "system.memory.usage/state.used": lambda s, n: 6.2e9 + 4e8 * math.sin(s / 3000 + n),
    "system.memory.utilization/state.used": lambda s, n: 0.38 + 0.02 * math.sin(s / 3000),
    "process.cpu.utilization": lambda s, n: 0.9 + 0.05 * math.sin(s / 800),
    "process.memory.usage": lambda s, n: 2.1e9 + 1e8 * math.sin(s / 2000 + n),
}


def metrics(step: int, n: int) -> dict[str, float]:
    decay = math.exp(-step / 6000)
    return {
        "train/loss": 2.3 * decay + 0.1 + 0.02 * math.sin(step / 37 + n),
        "train/acc": 0.95 - 0.85 * decay + 0.005 * math.sin(step / 41),
        "val/loss": 2.3 * decay + 0.15 + 0.01 * n,
        "val/acc": 0.93 - 0.83 * decay - 0.002 * n,
        "lr": 1e-3 * (1e-3 ** (step / 20000)) / (1 + n % 4),
        "grad_norm": 5 * decay + 0.5 + 0.1 * math.sin(step / 13),
    }


def fill(db: str, runs: int, steps: int) -> list[str]:
    store = open_store(db)
    ids = [f"sweep-{steps}-{n:02d}" for n in range(runs)]
    try:
        for n, rid in enumerate(ids):
            if store.get(rid) is not None:
                continue
            at = list(range(steps))
            rows = [metrics(s, n) for s in at]
            resource = {
                "markov.recording.name": f"sweep-{n:02d}", "markov.project.id": "sweep",
                "markov.hparam.lr": 1e-3 / (1 + n % 4), "markov.hparam.batch": 32 * (1 + n % 3),
                "markov.hparam.optimizer": ["adam", "sgd"][n % 2],
            }  # fmt: skip
            batches = [
                SeriesPoints.of(rid, key, at, [r[key] for r in rows], [T0 + s * 10**7 for s in at])
                for key in rows[0]
            ]
            sampled = list(range(0, steps, 100))
            batches += [
                SeriesPoints.of(rid, key, sampled, [f(s, n) for s in sampled],
                                [T0 + s * 10**7 + 1 for s in sampled])
                for key, f in SYSTEM.items()
            ]  # fmt: skip
            store.ingest(None, [(rid, resource)], batches)
            store.patch(rid, {"status": "finished"})
            print(f"  stored {rid}", file=sys.stderr)
    finally:
        store.close()
    return ids


def open_page(browser: Any, url: str, ready: str, shot: Path | None) -> tuple[float, int]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.add_cookies([{"name": "markov_token", "value": TOKEN, "url": url}])
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    started = time.perf_counter()
    page.goto(url)
    page.wait_for_selector(ready, timeout=120_000)
    took = time.perf_counter() - started
    height = int(page.evaluate("document.documentElement.scrollHeight"))
    if shot is not None:
        page.screenshot(path=str(shot), full_page=True)
    context.close()
    if errors:
        raise SystemExit(f"{url}: script errors {errors}")
    return took, height


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sqlite", help="SQLite file to keep the sweep in (default: a temp dir)")
    parser.add_argument("--screenshots", help="directory for runs-table.png and compare.png")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    shots = Path(args.screenshots) if args.screenshots else None
    with tempfile.TemporaryDirectory(prefix="bench-pages-") as tmp:
        db = f"sqlite:///{args.sqlite or Path(tmp) / 'sweep.db'}"
        ids = fill(db, args.runs, args.steps)
        process, url = start_backend(db, Path(tmp))
        try:
            with sync_playwright() as driver:
                browser = driver.chromium.launch(
                    executable_path="/usr/bin/chromium",
                    args=["--headless", "--no-sandbox", "--disable-gpu"],
                )
                pages = {
                    "runs table": (url + "/projects/sweep", "html[data-runs-ready]", "runs-table"),
                    f"compare {len(ids)} runs": (
                        url + "/compare?ids=" + ",".join(ids),
                        "html[data-charts-ready]",
                        "compare",
                    ),
                }
                found = {}
                for name, (address, ready, shot) in pages.items():
                    times = []
                    for i in range(args.repeat):
                        path = shots / f"{shot}.png" if shots and i == 0 else None
                        took, height = open_page(browser, address, ready, path)
                        times.append(took)
                    found[name] = (statistics.median(times), height)
                browser.close()
            request = urllib.request.Request(
                url + "/api/v1/recordings", headers={"Authorization": f"Bearer {TOKEN}"}
            )
            started = time.perf_counter()
            urllib.request.urlopen(request, timeout=60).read()
            base = time.perf_counter() - started
        finally:
            process.terminate()
            process.wait(timeout=30)
    load = os.getloadavg()[0]
    print(f"{args.runs} runs x {args.steps:,} steps; median of {args.repeat}; load {load:.1f}")
    print("| page | until drawn | ratio to GET /api/v1/recordings | page height |")
    print("|---|---:|---:|---:|")
    print(f"| baseline: GET /api/v1/recordings | {base * 1000:.0f} ms | 1 | |")
    for name, (took, height) in found.items():
        print(f"| {name} | {took * 1000:.0f} ms | {took / base:.1f} | {height} px |")


if __name__ == "__main__":
    main()
