"""Speed of the whole matrix (issues 14 and 11): cold/warm all-variant runs, ONNX-only vs a
Polygraphy-equivalent process, compare per variant, torch threads, and the targets.

    python bench/bench_speed.py              # the full benchmark (~15-25 min on 2 quiet cores)
    python bench/bench_speed.py --quick      # smoke test: warm ONNX-only of mobilenet_v2 on
                                             # $PARITY_CACHE_DIR, written under /tmp only

Writes the region of ``RESULTS.md`` between ``<!-- bench_speed:start -->`` and
``<!-- bench_speed:end -->`` and ``results_speed.json`` (in ``bench/`` unless ``--out``).
For each model, in one fresh cache: ``parity run`` all variants cold (default ``--jobs``),
warm with ``--jobs 2`` and ``--jobs 1``, and warm ONNX-only, each a fresh interpreter
watched by :func:`bench_workers.monitor` (``/proc`` at ~10 Hz): wall and CPU seconds, the
largest process's peak RSS and the tree's, reference cached/computed and the slowest
variants' seconds from the run's ``--json`` report. After the ONNX-only run,
``bench/polygraphy_equivalent.py`` (what ``polygraphy run --onnxrt --onnx-outputs mark
all`` does) on the same cached dynamo ONNX and the same preprocessed 16 images. The load
average is recorded before and after each step; the machine is noted. A missed target is
written as MISS with its number; why is written by hand afterwards: fill ``notes`` in
``results_speed.json`` and rerender with ``--render`` (until then a placeholder per MISS).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_workers import monitor

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- bench_speed:start -->", "<!-- bench_speed:end -->"
ALL = ["-r", "onnxruntime", "-r", "keras", "-r", "litert"]
#: step key -> (label, extra ``parity run`` arguments)
STEPS: dict[str, tuple[str, list[str]]] = {
    "cold": ("cold all-variant", ALL),
    "warm2": ("warm all-variant --jobs 2", [*ALL, "--jobs", "2"]),
    "warm1": ("warm all-variant --jobs 1", [*ALL, "--jobs", "1"]),
    "onnx": ("warm ONNX-only", ["-r", "onnxruntime"]),
}
GIB = 2**20  # KiB per GiB


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> str:
    """CPU model, cores usable by this process, memory."""
    info = Path("/proc/cpuinfo").read_text()
    model = next((x.split(":", 1)[1].strip() for x in info.splitlines() if "model name" in x), "?")
    memory = next(x for x in Path("/proc/meminfo").read_text().splitlines() if "MemTotal" in x)
    gib = int(memory.split()[1]) / GIB
    return f"{model}, {len(os.sched_getaffinity(0))} cores usable, {gib:.0f} GiB RAM"


def timed_run(args: list[str], cache: Path) -> dict[str, Any]:
    """``parity run ARGS --json`` in a fresh interpreter: time, memory, what the report says."""
    env = {**os.environ, "PARITY_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory(prefix="parity-bench-json-") as folder:
        report_path = Path(folder) / "report.json"
        command = [sys.executable, "-m", "parity.cli", "run", "-q", "--summary", *args]
        before = load()
        run = monitor([*command, "--json", str(report_path)], env=env)
        report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    variants = report.get("variants", [])
    slowest = sorted(variants, key=lambda v: -v["seconds"])[:4]
    largest = run["peaks"][0] if run["peaks"] else ("-", 0)
    return {
        "args": " ".join(args),
        "seconds": round(run["wall"], 1),
        "cpu_seconds": round(run["cpu"], 1),
        "largest_process": largest[0],
        "largest_rss_gib": round(largest[1] / GIB, 2),
        "tree_rss_gib": round(run["tree"] / GIB, 2),
        "processes": [[name, round(kib / GIB, 2)] for name, kib in run["peaks"]],
        "exit": run["rc"],
        "reference": report.get("reference", "no report"),
        "reference_seconds": report.get("reference_seconds"),
        "statuses": " ".join(
            f"{s} {sum(v['status'] == s for v in variants)}"
            for s in sorted({v["status"] for v in variants})
        ),
        "slowest": [f"{v['name']} {v['seconds']:.1f}" for v in slowest],
        "output_tail": "" if run["rc"] == 0 else run["output"][-1500:],
        "load_before": before,
        "load_after": load(),
    }


def polygraphy_equivalent(model: str, cache: Path) -> dict[str, Any]:
    """The bare ORT process marking every output, on ``model``'s cached dynamo ONNX."""
    from parity.harness import RunConfig, Session

    onnx_files = sorted(
        (cache / "artifacts" / model).glob("onnx_dynamo-*/model.onnx"),
        key=lambda p: p.stat().st_mtime,
    )
    if not onnx_files:
        return {"error": f"no cached dynamo ONNX for {model} in {cache}"}
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="parity-bench-batch-") as folder:
        batch = Path(folder) / "batch.npy"
        np.save(batch, Session(RunConfig(model=model)).batch)
        script = str(ROOT / "bench" / "polygraphy_equivalent.py")
        before = load()
        run = monitor([sys.executable, script, str(onnx_files[-1]), str(batch)])
    return {
        "seconds": round(run["wall"], 2),
        "cpu_seconds": round(run["cpu"], 1),
        "peak_rss_gib": round(run["tree"] / GIB, 2),
        "exit": run["rc"],
        "output": run["output"].strip()[-300:],
        "load_before": before,
        "load_after": load(),
    }


def compare_and_threads(model: str) -> dict[str, Any]:
    """Compare per variant (shared reference vs plain formulas) and torch threads 1 vs 2."""
    import numpy as np
    import torch  # noqa: F401  (import order: torch before anything TF-related)

    sys.path.insert(0, str(ROOT / "tests"))
    from test_compare_real import formulas

    from parity.compare import compare_taps, prepare_reference
    from parity.harness import RunConfig, make_runner
    from parity.local import LocalSession as Session
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


def _verdict(value: float | None, limit: float) -> str:
    return "not measured" if value is None else ("PASS" if value <= limit else "MISS")


def targets(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(target, measured, PASS/MISS) for issue 14 item 7 and issue 11 item 8 (mobilenet_v2)."""
    runs = results["runs"].get("mobilenet_v2", {})

    def seconds(step: str) -> float | None:
        return runs[step]["seconds"] if step in runs else None

    rows: list[tuple[str, str, str]] = []
    for step, limit in (("cold", 90.0), ("warm2", 25.0), ("warm1", 25.0), ("onnx", 4.0)):
        value = seconds(step)
        text = "-" if value is None else f"{value} s (CPU {runs[step]['cpu_seconds']} s)"
        if value is not None and runs[step]["exit"]:
            text += f", exit {runs[step]['exit']}"
        rows.append((f"{STEPS[step][0]} <= {limit:g} s", text, _verdict(value, limit)))
    poly = results.get("polygraphy", {}).get("mobilenet_v2", {})
    ratio = None
    if seconds("onnx") and poly.get("seconds"):
        ratio = round(seconds("onnx") / poly["seconds"], 1)  # type: ignore[operator]
    rows.append((
        "warm ONNX-only within 3x of the Polygraphy-equivalent",
        "-" if ratio is None else f"{ratio}x ({seconds('onnx')} s / {poly['seconds']} s)",
        _verdict(ratio, 3.0),
    ))  # fmt: skip
    compare = results["compare"].get("mobilenet_v2", {}).get("compare", [])
    worst = max((row["new_s"] for row in compare), default=None)
    rows.append(("compare <= 0.4 s per variant", f"{worst} s (slowest variant)" if compare else "-",
                 _verdict(worst, 0.4)))  # fmt: skip
    suite = results.get("suite") or {}
    minutes = suite["seconds"] / 60 if suite.get("seconds") else None
    rows.append(("default test suite <= 6 min (cold user cache)",
                 f"{minutes:.1f} min ({suite['summary']}; measured {suite['date']})"
                 if suite else "- (bench/bench_suite.py)",
                 _verdict(minutes, 6.0)))  # fmt: skip
    rows.append(("default test suite <= 4 GiB peak RSS (tree)",
                 f"{suite['tree_rss_gib']} GiB" if suite else "-",
                 _verdict(suite.get("tree_rss_gib"), 4.0)))  # fmt: skip
    all_variant = {k: v for k, v in runs.items() if k != "onnx"}
    if all_variant:
        step, run = max(all_variant.items(), key=lambda kv: kv[1]["largest_rss_gib"])
        largest = f"{run['largest_rss_gib']} GiB ({run['largest_process']}, {STEPS[step][0]})"
        step, run = max(all_variant.items(), key=lambda kv: kv[1]["tree_rss_gib"])
        tree = f"{run['tree_rss_gib']} GiB ({STEPS[step][0]})"
    top = max((r["largest_rss_gib"] for r in all_variant.values()), default=None)
    total = max((r["tree_rss_gib"] for r in all_variant.values()), default=None)
    rows.append(("no process over 2 GiB (all-variant runs)", largest if all_variant else "-",
                 _verdict(top, 2.0)))  # fmt: skip
    rows.append(("process tree under 4 GiB (all-variant runs)", tree if all_variant else "-",
                 _verdict(total, 4.0)))  # fmt: skip
    return rows


def markdown(results: dict[str, Any]) -> str:
    lines = [
        START,
        "## Speed of the whole matrix (`bench/bench_speed.py`, issues 14 and 11)",
        "",
        f"- date: {results['date']}; command: `python bench/run_all.py` "
        f"({results.get('seconds', 0):.0f} s); cache: {results['cache']}",
        f"- machine: {results['machine']}; load average (1/5/15 min) {results['load_start']} at "
        f"start, {results.get('load_end', '-')} at end (a shared machine inflates absolute "
        "seconds; CPU seconds and ratios measured side by side compare better)",
        "",
        "### Targets (mobilenet_v2; issue 14 item 7, issue 11 item 8)",
        "",
        "| target | measured | verdict |",
        "|---|---|---|",
        *(f"| {t} | {m} | {v} |" for t, m, v in targets(results)),
        "",
        "### Runs (`parity run -q --summary -m MODEL ...`, one fresh interpreter each)",
        "",
        "| model | run | exit | wall s | CPU s | largest process GiB | tree GiB | reference "
        "| slowest variants (s, from --json) | old: s / peak GiB | load before → after |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model, runs in results["runs"].items():
        for step, run in runs.items():
            old = results["baseline"].get(f"{model}/{step}")
            old_text = f"{old['seconds']} / {old['peak_rss_gib']}" if old else "-"
            lines.append(
                f"| {model} | {STEPS[step][0]} (`{run['args']}`) | {run['exit']} "
                f"| {run['seconds']} | {run['cpu_seconds']} | {run['largest_rss_gib']} "
                f"({run['largest_process']}) | {run['tree_rss_gib']} | {run['reference']} "
                f"| {', '.join(run['slowest'])} | {old_text} "
                f"| {run['load_before']} → {run['load_after']} |"
            )
    lines += ["", *polygraphy_lines(results), *compare_lines(results), "", "Why each MISS:", ""]
    misses = [t for t, _, v in targets(results) if v == "MISS"]
    lines += results["notes"] or [f"- {t}: _to be written from the profile_" for t in misses]
    lines += [END]
    return "\n".join(lines) + "\n"


def polygraphy_lines(results: dict[str, Any]) -> list[str]:
    lines = [
        "### Warm ONNX-only vs a Polygraphy-equivalent process",
        "",
        "Polygraphy is not installed (no network): `bench/polygraphy_equivalent.py` does what "
        "`polygraphy run --onnxrt --onnx-outputs mark all` does (fresh interpreter, import onnx "
        "+ onnxruntime, shape inference, every node output marked, one session, the 16 "
        "images in one call, exit) on the same cached dynamo ONNX. It reads the images already "
        "preprocessed from an `.npy` the bench writes first (as a Polygraphy data-loader "
        "script would feed them), so image decoding is not timed on its side; parity's run "
        "decodes and preprocesses the fixtures itself and checks every ONNX variant (4), "
        "not 1: the ratio favours the baseline.",
        "",
    ]
    for model, poly in results.get("polygraphy", {}).items():
        parity_s = results["runs"].get(model, {}).get("onnx", {}).get("seconds")
        if "error" in poly:
            lines.append(f"- {model}: {poly['error']}")
            continue
        ratio = f"{parity_s / poly['seconds']:.1f}x" if parity_s else "-"
        lines.append(
            f"- {model}: {poly['seconds']} s wall, CPU {poly['cpu_seconds']} s, peak "
            f"{poly['peak_rss_gib']} GiB, exit {poly['exit']} ({poly['output']}); parity warm "
            f"ONNX-only {parity_s} s: ratio {ratio} (load {poly['load_before']} → "
            f"{poly['load_after']})"
        )
    return lines


def compare_lines(results: dict[str, Any]) -> list[str]:
    lines = ["", "### Compare, per variant (all taps, 16 images; best of 3)", ""]
    if not results["compare"]:
        return [*lines, "Not measured in this run (`--skip-compare`)."]
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
    return lines


def write(results: dict[str, Any], out: Path, started: float | None) -> None:
    """Write what is measured so far (JSON, then the RESULTS.md region); ``started`` None:
    only re-render."""
    if started is not None:
        results["load_end"] = load()
        results["seconds"] = time.perf_counter() - started
    suite = out / "results_suite.json"
    results["suite"] = json.loads(suite.read_text()) if suite.is_file() else None
    (out / "results_speed.json").write_text(json.dumps(results, indent=2) + "\n")
    write_region(out / "RESULTS.md", START, END, markdown(results))


def write_region(path: Path, start: str, end: str, region: str) -> None:
    """Replace the text between ``start`` and ``end`` in ``path`` (or append it)."""
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    if start in text:
        text = text[: text.index(start)] + region + text[text.index(end) + len(end) + 1 :]
    else:
        text = text.rstrip("\n") + "\n\n" + region
    path.write_text(text)


def gnu_time(text: str) -> dict[str, Any] | None:
    """Wall and CPU seconds and peak RSS from the output of GNU ``time -v``."""
    wall = re.search(r"Elapsed \(wall clock\) time .*: (?:(\d+):)?(\d+):([\d.]+)", text)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    if not (wall and rss):
        return None
    seconds = int(wall.group(1) or 0) * 3600 + int(wall.group(2)) * 60 + float(wall.group(3))
    cpu = sum(float(x) for x in re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)", text))
    return {
        "seconds": round(seconds, 1),
        "cpu_seconds": round(cpu, 1),
        "peak_rss_gib": round(int(rss.group(1)) / GIB, 2),
    }


def baseline(path: Path) -> dict[str, Any] | None:
    """The old implementation's figures, from a GNU ``time -v`` file (None if absent)."""
    return gnu_time(path.read_text(errors="replace")) if path.is_file() else None


def measure_model(model: str, steps: list[str], cache: Path, results: dict[str, Any],
                  save: Any) -> None:  # fmt: skip
    """Every step of ``model`` in ``cache``, saving after each."""
    runs: dict[str, Any] = {}
    results["runs"][model] = runs
    for step in steps:
        runs[step] = timed_run(["-m", model, *STEPS[step][1]], cache)
        save()
        if step == "onnx":
            results["polygraphy"][model] = polygraphy_equivalent(model, cache)
            save()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mobilenet_v2,resnet18")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"of {','.join(STEPS)}")
    parser.add_argument("--cache", type=Path, help="use this cache (default: a fresh one)")
    parser.add_argument("--skip-compare", action="store_true")
    parser.add_argument("--quick", action="store_true", help="smoke test, see above")
    parser.add_argument("--out", type=Path, default=ROOT / "bench")
    parser.add_argument("--baseline", type=Path, default=Path("/work/bench-baseline"))
    parser.add_argument("--render", action="store_true", help="only rerender from the JSON")
    args = parser.parse_args()
    if args.render:
        write(json.loads((args.out / "results_speed.json").read_text()), args.out, None)
        return
    if args.quick:
        args.models, args.steps, args.skip_compare = "mobilenet_v2", "onnx", True
        args.cache = args.cache or Path(os.environ.get("PARITY_CACHE_DIR", "~/.cache/parity"))
        args.out = Path(tempfile.gettempdir()) / "parity-bench-quick"
        args.out.mkdir(exist_ok=True)
    started = time.perf_counter()
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "load_start": load(),
        "cache": str(args.cache.expanduser()) if args.cache else "fresh (empty) per model",
        "runs": {}, "polygraphy": {}, "compare": {}, "baseline": {}, "notes": [],
    }  # fmt: skip

    def save() -> None:
        write(results, args.out, started)

    if not args.skip_compare:
        # compare and threads first, in this process, on the user's (warm or not) cache
        results["compare"]["mobilenet_v2"] = compare_and_threads("mobilenet_v2")
        save()
    steps = args.steps.split(",")
    for model in args.models.split(","):
        short = {"mobilenet_v2": "mnv2", "resnet18": "r18"}.get(model, model)
        for step, name in (("cold", "cold"), ("warm1", "warm")):
            old = baseline(args.baseline / f"{short}_{name}.txt")
            if old:
                results["baseline"][f"{model}/{step}"] = old
        if args.cache:
            measure_model(model, steps, args.cache.expanduser(), results, save)
            continue
        with tempfile.TemporaryDirectory(prefix="parity-bench-") as cache:
            measure_model(model, steps, Path(cache), results, save)
    print(markdown(results))


if __name__ == "__main__":
    main()
