"""Speed of the whole matrix (issue 14): cold/warm all-variant runs, compare, threads.

Writes the region of ``bench/RESULTS.md`` between ``<!-- bench_speed:start -->`` and
``<!-- bench_speed:end -->`` and ``bench/results_speed.json``. Every figure comes from
this one run (the machine is shared: ratios measured side by side mean more than
absolute seconds); the load average is recorded before and after each step.

* ``parity run`` in fresh interpreters under ``/usr/bin/time -v`` (wall, peak RSS):
  all variants cold (empty cache dir), warm (same cache), warm ONNX-only.
* compare: the shared-reference path vs the plain float64 formulas, per variant, on
  mobilenet_v2's real taps (torch vs ONNX Runtime, and a float16 round trip).
* threads: the torch reference at 1 vs 2 intra-op threads, interleaved.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- bench_speed:start -->", "<!-- bench_speed:end -->"
ALL = ["-r", "onnxruntime", "-r", "keras", "-r", "litert"]


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def timed_run(args: list[str], cache: Path) -> dict[str, Any]:
    """``parity run ARGS`` in a fresh interpreter: wall seconds, peak RSS, exit code."""
    env = {**os.environ, "PARITY_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)}
    command = ["/usr/bin/time", "-v", sys.executable, "-m", "parity.cli", "run", "-q", *args]
    before = load()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    wall = re.search(r"Elapsed \(wall clock\) time .*: (?:(\d+):)?(\d+):([\d.]+)", done.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    cpu = re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)", done.stderr)
    assert wall and rss, done.stderr[-2000:]
    hours, minutes, seconds = int(wall.group(1) or 0), int(wall.group(2)), float(wall.group(3))
    return {
        "args": " ".join(args),
        "seconds": round(hours * 3600 + minutes * 60 + seconds, 1),
        "cpu_seconds": round(sum(float(x) for x in cpu), 1),
        "peak_rss_gib": round(int(rss.group(1)) / 2**20, 2),
        "exit": done.returncode,
        "reference": "cached" if "reference: cached" in done.stdout else "computed",
        "load_before": before,
        "load_after": load(),
    }


def baseline(path: Path) -> dict[str, Any] | None:
    """Wall seconds and peak RSS from a GNU time -v file of the old implementation."""
    if not path.is_file():
        return None
    text = path.read_text(errors="replace")
    wall = re.search(r"Elapsed \(wall clock\) time .*: (?:(\d+):)?(\d+):([\d.]+)", text)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    if not (wall and rss):
        return None
    seconds = int(wall.group(1) or 0) * 3600 + int(wall.group(2)) * 60 + float(wall.group(3))
    cpu = sum(float(x) for x in re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)", text))
    return {
        "seconds": round(seconds, 1),
        "cpu_seconds": round(cpu, 1),
        "peak_rss_gib": round(int(rss.group(1)) / 2**20, 2),
    }


def compare_and_threads(model: str) -> dict[str, Any]:
    """Compare per variant (shared reference vs plain formulas) and torch threads 1 vs 2."""
    import numpy as np
    import torch  # noqa: F401  (import order: torch before anything TF-related)

    sys.path.insert(0, str(ROOT / "tests"))
    from test_compare_real import formulas

    from parity.compare import compare_taps, prepare_reference
    from parity.harness import RunConfig, Session, make_runner
    from parity.variants import VARIANTS

    session = Session(RunConfig(model=model))
    reference = session.reference
    rounded = {k: v.astype(np.float16).astype(np.float32) for k, v in reference.items()}
    variants = {"ort_dynamo": session.outputs(VARIANTS["ort_dynamo"])[0], "float16": rounded}
    start = time.perf_counter()
    prepared = prepare_reference(reference, session.taps)
    prepare_seconds = time.perf_counter() - start
    rows = []
    for name, obtained in variants.items():
        new, old = [], []
        for _ in range(3):
            start = time.perf_counter()
            compare_taps(model, name, session.taps, prepared, obtained, session.policy)
            new.append(time.perf_counter() - start)
            start = time.perf_counter()
            for tap in session.taps:
                formulas(reference[tap.name], obtained[tap.name], tap.is_logits)
            old.append(time.perf_counter() - start)
        rows.append({"variant": name, "new_s": round(min(new), 3), "plain_s": round(min(old), 3)})
    threads: dict[int, list[float]] = {1: [], 2: []}
    module = session.model().module
    for _ in range(3):
        for count in (1, 2):
            with make_runner(VARIANTS["torch"], module, count) as runner:
                start = time.perf_counter()
                runner.run(session.batch, session.taps)
                threads[count].append(time.perf_counter() - start)
    return {
        "prepare_s": round(prepare_seconds, 3),
        "compare": rows,
        "reference_threads_s": {str(k): round(min(v), 2) for k, v in threads.items()},
        "load": load(),
    }


def markdown(results: dict[str, Any]) -> str:
    lines = [
        START,
        "## Speed of the whole matrix (`bench/bench_speed.py`, issue 14)",
        "",
        f"- date: {results['date']}; command: `python bench/run_all.py` "
        f"({results['seconds']:.0f} s)",
        f"- machine: {os.cpu_count()} CPUs; load average (1/5/15 min) {results['load_start']} at "
        f"start, {results['load_end']} at end (other agents share the machine: absolute seconds "
        "are inflated, ratios measured side by side are the comparable figures)",
        "- old: /work/bench-baseline (GNU time -v of the previous main, same commands, another "
        "moment's load)",
        "",
        "| model | run | now: s / peak GiB | CPU s (user+sys) | old: s / peak GiB | reference "
        "| load before→after |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, runs in results["runs"].items():
        for label, run in runs.items():
            old = results["baseline"].get(f"{model}/{label}")
            old_text = "-"
            if old:
                old_text = (
                    f"{old['seconds']} / {old['peak_rss_gib']} (CPU {old.get('cpu_seconds')})"
                )
            lines.append(
                f"| {model} | {label} (`{run['args']}`) exit {run['exit']} | {run['seconds']} / "
                f"{run['peak_rss_gib']} | {run.get('cpu_seconds', '-')} | {old_text} | "
                f"{run['reference']} | "
                f"{run['load_before']} → {run['load_after']} |"
            )
    lines += ["", "### Compare, per variant (all taps, 16 images; best of 3)", ""]
    for model, data in results["compare"].items():
        lines.append(f"{model}: reference statistics once per tap {data['prepare_s']} s (shared)")
        lines += [
            "",
            "| variant | shared reference | plain formulas | speed-up |",
            "|---|---|---|---|",
        ]
        for row in data["compare"]:
            ratio = row["plain_s"] / row["new_s"] if row["new_s"] else float("inf")
            lines.append(
                f"| {row['variant']} | {row['new_s']} s | {row['plain_s']} s | {ratio:.1f}x |"
            )
        threads = data["reference_threads_s"]
        lines += [
            "",
            f"Torch reference, 16 images, all taps: 1 thread {threads['1']} s, 2 threads "
            f"{threads['2']} s (best of 3, interleaved; load {data['load']}).",
        ]
    lines += ["", *results["notes"], END]
    return "\n".join(lines) + "\n"


def write(results: dict[str, Any], markdown_path: Path, started: float | None) -> None:
    """Write what is measured so far (the JSON and the RESULTS.md region); ``started``
    None: only re-render what was measured."""
    if started is not None:
        results["load_end"] = load()
        results["seconds"] = time.perf_counter() - started
    (ROOT / "bench" / "results_speed.json").write_text(json.dumps(results, indent=2) + "\n")
    text = markdown_path.read_text() if markdown_path.is_file() else "# Benchmarks\n"
    region = markdown(results)
    if START in text:
        text = text[: text.index(START)] + region + text[text.index(END) + len(END) + 1 :]
    else:
        text = text.rstrip("\n") + "\n\n" + region
    markdown_path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mobilenet_v2,resnet18")
    parser.add_argument("--markdown", type=Path, default=ROOT / "bench" / "RESULTS.md")
    parser.add_argument("--baseline", type=Path, default=Path("/work/bench-baseline"))
    parser.add_argument(
        "--render", action="store_true", help="only rewrite the region from results_speed.json"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    if args.render:
        results = json.loads((ROOT / "bench" / "results_speed.json").read_text())
        for key in list(results["baseline"]):
            model, label = key.split("/")
            name = {"cold all-variant": "cold", "warm all-variant": "warm"}[label]
            short = {"mobilenet_v2": "mnv2", "resnet18": "r18"}.get(model, model)
            results["baseline"][key] = baseline(args.baseline / f"{short}_{name}.txt")
        write(results, args.markdown, None)
        return
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_start": load(),
        "runs": {},
        "compare": {},
        "baseline": {},
        "notes": [],
    }
    # compare and threads first, in this process, on the user's (warm or not) cache
    results["compare"]["mobilenet_v2"] = compare_and_threads("mobilenet_v2")
    write(results, args.markdown, started)
    short = {"mobilenet_v2": "mnv2", "resnet18": "r18"}
    for model in args.models.split(","):
        for label, name in (("cold all-variant", "cold"), ("warm all-variant", "warm")):
            old = baseline(args.baseline / f"{short.get(model, model)}_{name}.txt")
            if old:
                results["baseline"][f"{model}/{label}"] = old
        runs: dict[str, Any] = {}
        results["runs"][model] = runs
        with tempfile.TemporaryDirectory(prefix="parity-bench-") as cache:
            steps = {
                "cold all-variant": ["-m", model, *ALL, "--summary"],
                "warm all-variant": ["-m", model, *ALL, "--summary"],
                "warm ONNX-only": ["-m", model, "-r", "onnxruntime", "--summary"],
            }
            for label, run_args in steps.items():
                runs[label] = timed_run(run_args, Path(cache))
                write(results, args.markdown, started)
    print(markdown(results))


if __name__ == "__main__":
    main()
