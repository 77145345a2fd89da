"""Benchmark the ONNX path of the parity gate: export, inference overhead, cache, memory.

    .venv/bin/python bench/bench_onnx.py [--models mobilenet_v2 resnet18] [--repeats N]

Everything runs against fresh temporary cache directories (``PARITY_CACHE_DIR``), so
weights calibration and exports are always cold where the section says so. Sections:

1. cold export per exporter, in one subprocess per repeat (imports and calibration timed
   separately, exporters in the harness's order: dynamo first, then TorchScript);
2. bare ``onnxruntime.InferenceSession`` vs ``OnnxRuntimeRunner.run`` without and with
   every tap, interleaved rounds, a settle gap before each call (see ``--gap-ms``);
3. ``run_parity`` cold (first subprocess) vs warm (second subprocess, same cache);
4. peak RSS of those subprocesses (``os.wait4`` rusage of each child);
5. artifact sizes.

Writes ``bench/results_onnx.json`` (raw samples) and the region of ``bench/RESULTS.md``
between ``<!-- bench_onnx:start -->`` and ``<!-- bench_onnx:end -->`` (the rest of the
file is kept, so other benchmarks can append their own sections).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
START_MARK = "<!-- bench_onnx:start -->"
END_MARK = "<!-- bench_onnx:end -->"

#: Exporter name -> the variant that runs it (harness order: dynamo first).
EXPORT_VARIANTS = {"onnx_dynamo": "ort_dynamo", "onnx_torchscript": "ort_torchscript"}

TARGET_NO_TAPS = 1.25
TARGET_ALL_TAPS = 2.0
TARGET_WARM_SPEEDUP = 5.0
TARGET_PEAK_RSS_GIB = 2.0
RSS_MODEL = "mobilenet_v2"

# --- subprocess bodies (run as `python -c CODE ARGS...`, print one JSON line) ---------

#: Section 1: imports, weights calibration and each export, timed apart, cold cache.
CHILD_EXPORT = r"""
import json, os, sys, time
T = time.perf_counter
t0 = T()
from parity.harness import RunConfig
from parity.local import LocalSession as Session
from parity.backends import get_exporter
from parity import lazy
out = {"import_parity_s": T() - t0}
t = T(); lazy.torch(); out["import_torch_s"] = T() - t
t = T(); import onnx, onnxscript, onnxruntime; out["import_onnx_s"] = T() - t
weights_dir = os.path.join(os.environ["PARITY_CACHE_DIR"], "weights")
out["weights_cached_before"] = os.path.isdir(weights_dir) and any(
    name.startswith(sys.argv[1] + "-") for name in os.listdir(weights_dir)
)
session = Session(RunConfig(model=sys.argv[1]))
t = T(); loaded = session.model(); out["calibration_s"] = T() - t
out["weights_files"] = {
    name: os.path.getsize(os.path.join(weights_dir, name))
    for name in os.listdir(weights_dir) if name.startswith(sys.argv[1] + "-")
}
out["exports"] = {}
for name in sys.argv[2:]:
    t = T()
    artifact = session.cache.get(get_exporter(name), session.context)
    wall = T() - t
    meta = artifact.metadata
    out["exports"][name] = {
        "wall_s": wall, "export_s": meta.get("export_seconds"), "built": artifact.built,
        "bytes": artifact.size_bytes, "nodes": meta.get("nodes"), "opset": meta.get("opset"),
        "sha256": meta.get("sha256"), "path": str(artifact.path),
    }
out["total_s"] = T() - t0
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
out["vmhwm_kib"] = int(status["VmHWM"].split()[0])
print(json.dumps(out))
"""

#: Section 3/4: one full run_parity, exactly as a user's process would do it.
CHILD_RUN = r"""
import json, sys, time
from pathlib import Path
T = time.perf_counter
t0 = T()
from parity.harness import RunConfig, run_parity
import_s = T() - t0
events = []
t1 = T()
report = run_parity(
    RunConfig(model=sys.argv[1], cache_root=Path(sys.argv[2])),
    progress=lambda message: events.append([round(T() - t0, 3), message]),
)
run_s = T() - t1
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
print(json.dumps({
    "import_parity_s": import_s,
    "run_parity_s": run_s,
    "wall_seconds": report.wall_seconds,
    "reference_s": report.reference_seconds,
    "total_s": T() - t0,
    "vmhwm_kib": int(status["VmHWM"].split()[0]),
    "passed": report.passed,
    "events": events,
    "results": [
        {
            "variant": r.variant.name, "seconds": r.seconds, "passed": r.passed,
            "error": r.error,
            "built": None if r.artifact is None else r.artifact.built,
            "export_s": None if r.artifact is None else r.artifact.metadata.get("export_seconds"),
        }
        for r in report.results
    ],
}))
"""


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def run_child(code: str, args: Sequence[str], cache_dir: Path) -> dict[str, Any]:
    """Run ``python -c code args`` with its own cache dir; its JSON plus wall time and RSS."""
    env = {**os.environ, "PARITY_CACHE_DIR": str(cache_dir)}
    with tempfile.TemporaryFile() as stderr:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-c", code, *args],
            stdout=subprocess.PIPE,
            stderr=stderr,
            cwd=ROOT,
            env=env,
        )
        assert proc.stdout is not None
        stdout = proc.stdout.read()
        proc.stdout.close()
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            stderr.seek(0)
            tail = stderr.read().decode(errors="replace")[-3000:]
            raise RuntimeError(f"child {args} exited {proc.returncode}:\n{tail}")
    lines = [line for line in stdout.decode().splitlines() if line.startswith("{")]
    result: dict[str, Any] = json.loads(lines[-1])
    result["subprocess_wall_s"] = wall
    # Linux carries the parent's RSS high-water mark across fork+exec into the child's
    # ru_maxrss (getrusage RUSAGE_SELF/RUSAGE_CHILDREN alike), so with a large parent it
    # over-reports; the child's own VmHWM (read before it exits) is the figure used.
    result["ru_maxrss_kib_inherited"] = usage.ru_maxrss
    return result


def vmrss_kib() -> int:
    """This process's resident set size now (KiB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# --- section 1 -------------------------------------------------------------------------


def bench_export(model: str, repeats: int, workdir: Path, main_cache: Path) -> dict[str, Any]:
    """Cold exports: one subprocess per repeat, each with an empty cache dir."""
    runs = []
    for index in range(repeats):
        # Repeat 0 fills the cache this process later runs section 2 from.
        cache = main_cache if index == 0 else workdir / f"export-{model}-{index}"
        print(f"[export] {model} repeat {index + 1}/{repeats}", flush=True)
        run = run_child(CHILD_EXPORT, [model, *EXPORT_VARIANTS], cache)
        if run["weights_cached_before"] or not all(e["built"] for e in run["exports"].values()):
            raise RuntimeError(f"{model}: export repeat {index} was not cold")
        runs.append(run)
        if cache != main_cache:
            shutil.rmtree(cache, ignore_errors=True)
    summary = {
        "import_torch_s": median([r["import_torch_s"] for r in runs]),
        "import_onnx_s": median([r["import_onnx_s"] for r in runs]),
        "calibration_s": median([r["calibration_s"] for r in runs]),
        "exports": {
            name: {
                "export_s": median([r["exports"][name]["export_s"] for r in runs]),
                "export_s_min": min(r["exports"][name]["export_s"] for r in runs),
                "export_s_max": max(r["exports"][name]["export_s"] for r in runs),
                "wall_s": median([r["exports"][name]["wall_s"] for r in runs]),
            }
            for name in EXPORT_VARIANTS
        },
    }
    return {"runs": runs, "summary": summary}


# --- section 2 -------------------------------------------------------------------------


def ort_options(ort: Any, threads: int, optimized_path: Path | None = None) -> Any:
    """The session options OnnxRuntimeRunner uses (graph_optimization='all')."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
    return options


def optimized_ops(ort: Any, onnx: Any, model: bytes, threads: int, path: Path) -> Counter[str]:
    """Op histogram of the graph ORT actually runs (after ORT_ENABLE_ALL)."""
    ort.InferenceSession(model, ort_options(ort, threads, path), providers=["CPUExecutionProvider"])
    graph = onnx.load(str(path), load_external_data=False).graph
    return Counter(node.op_type for node in graph.node)


def interleave(
    calls: dict[str, Callable[[], Any]], repeats: int, warmup: int, gap: float
) -> dict[str, list[float]]:
    """Warm every call up, then time ``repeats`` rounds, rotating the order every round."""
    for call in calls.values():
        for _ in range(warmup):
            time.sleep(gap)
            call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for index in range(repeats):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            time.sleep(gap)  # let the previous session's spinning workers go idle
            start = time.perf_counter()
            calls[name]()
            samples[name].append(time.perf_counter() - start)
    return samples


def ratios(samples: dict[str, list[float]], base: str = "bare") -> dict[str, Any]:
    """Ratio of medians to ``base`` and the spread of the per-round ratios."""
    med = {name: median(values) for name, values in samples.items()}
    out: dict[str, Any] = {"median_s": med, "ratio_of_medians": {}, "per_round_ratio": {}}
    for name, values in samples.items():
        if name == base:
            continue
        per_round = [h / b for h, b in zip(values, samples[base], strict=True)]
        out["ratio_of_medians"][name] = med[name] / med[base]
        out.setdefault("ratio_of_minimums", {})[name] = min(values) / min(samples[base])
        out["per_round_ratio"][name] = {
            "median": median(per_round),
            "p25": quantile(per_round, 0.25),
            "p75": quantile(per_round, 0.75),
        }
    return out


def single_session_runner(base: type) -> type:
    """The ORT runner minus its unused plain session (an experiment; parity/ is unchanged).

    ``_activate`` reads the input/output names from the graph instead of building a
    session; the first ``run`` then builds only the session it needs.
    """

    class SingleSessionRunner(base):
        def _activate(self) -> None:
            from parity import lazy

            self.ort = lazy.require("onnxruntime")
            self.onnx = lazy.require("onnx")
            self._sessions.clear()
            graph = self.onnx.load(str(self.path), load_external_data=False).graph
            initializers = {i.name for i in graph.initializer}
            self.input_name = next(i.name for i in graph.input if i.name not in initializers)
            self.output_name = graph.output[0].name

    return SingleSessionRunner


def bench_variant(
    session: Any,
    exporter: str,
    repeats: int,
    warmup: int,
    gap: float,
    workdir: Path,
    no_gap_check: bool,
    setup_rounds: int,
) -> dict[str, Any]:
    """One artifact: bare session vs the harness runner, plus what explains the difference."""
    import onnx
    import onnxruntime as ort

    from parity.backends.onnxruntime.runner import OnnxRuntimeRunner, locate_taps, torch_scope
    from parity.harness import make_runner
    from parity.variants import VARIANTS

    batch, taps, threads = session.batch, session.taps, session.config.threads
    variant = VARIANTS[EXPORT_VARIANTS[exporter]]
    artifact = session.artifact(variant)
    if artifact.built:
        raise RuntimeError(f"{exporter}: expected the artifact section 1 cached")
    runner = make_runner(variant, artifact, threads)  # exactly as Session.outputs does
    options = {**variant.options, **artifact.metadata.get("runner_options", {})}

    start = time.perf_counter()
    runner.activate()  # builds the plain session
    activate_s = time.perf_counter() - start
    start = time.perf_counter()
    tapped_outputs = runner.run(batch, taps)  # builds the tapped session, then runs
    first_tapped_run_s = time.perf_counter() - start
    fetched_bytes = sum(v.nbytes for v in tapped_outputs.values())
    del tapped_outputs

    providers = ["CPUExecutionProvider"]
    start = time.perf_counter()
    bare = ort.InferenceSession(str(artifact.path), ort_options(ort, threads), providers=providers)
    bare_session_s = time.perf_counter() - start
    input_name = bare.get_inputs()[0].name
    output_name = bare.get_outputs()[0].name
    # The same tapped graph the runner builds (same steps, timed), to split its cost.
    start = time.perf_counter()
    proto = onnx.load(str(artifact.path))
    located = locate_taps(proto, taps, torch_scope)
    existing = {o.name for o in proto.graph.output}
    for value in dict.fromkeys(located.values()):
        if value not in existing:
            proto.graph.output.append(onnx.ValueInfoProto(name=value))
    tapped_bytes = proto.SerializeToString()
    tapped = ort.InferenceSession(tapped_bytes, ort_options(ort, threads), providers=providers)
    tapped_session_s = time.perf_counter() - start
    # Resident cost of one more (never run) plain session, like the runner's unused one.
    rss_before = vmrss_kib()
    extra = ort.InferenceSession(str(artifact.path), ort_options(ort, threads), providers=providers)
    extra_session_rss_kib = vmrss_kib() - rss_before
    del extra
    plain_ops = optimized_ops(
        ort, onnx, artifact.path.read_bytes(), threads, workdir / "opt-plain.onnx"
    )
    tapped_ops = optimized_ops(ort, onnx, tapped_bytes, threads, workdir / "opt-tapped.onnx")
    del proto, tapped_bytes

    feed = {input_name: batch}
    calls: dict[str, Callable[[], Any]] = {
        "bare": lambda: bare.run([output_name], feed),
        "harness_no_taps": lambda: runner.run(batch, ()),
        "harness_all_taps": lambda: runner.run(batch, taps),
        # diagnostic: the tapped graph fetching only the final output
        "tapped_graph_output_only": lambda: tapped.run([output_name], feed),
    }
    samples = interleave(calls, repeats, warmup, gap)
    result: dict[str, Any] = {"samples_s": samples, **ratios(samples)}
    if no_gap_check:  # the same rounds without the idle gap: the spinning-thread bias
        no_gap = interleave(calls, max(repeats // 2, 3), 0, 0.0)
        result["no_gap"] = {"samples_s": no_gap, **ratios(no_gap)}
    runner.deactivate()

    # What a run_parity variant pays before its first result: runner set-up + first tapped
    # run, stock runner vs one that builds only the session it runs. Interleaved rounds.
    single_cls = single_session_runner(OnnxRuntimeRunner)

    def setup_and_run(cls: type) -> Callable[[], Any]:
        def call() -> Any:
            fresh = cls(variant.name, artifact.path, threads=threads, **options)
            with fresh:
                return fresh.run(batch, taps)

        return call

    setup = interleave(
        {"stock": setup_and_run(OnnxRuntimeRunner), "single": setup_and_run(single_cls)},
        setup_rounds,
        1,
        gap,
    )
    result["setup"] = {"samples_s": setup, **ratios(setup, base="stock")}
    result.update(
        fetched_bytes_all_taps=fetched_bytes,
        fetched_values=1 + len(set(located.values())),
        activate_s=activate_s,
        first_tapped_run_s=first_tapped_run_s,
        bare_session_s=bare_session_s,
        tapped_session_s=tapped_session_s,
        extra_session_rss_kib=extra_session_rss_kib,
        optimized_ops={"plain": dict(plain_ops), "tapped": dict(tapped_ops)},
        non_reorder_nodes={
            "plain": sum(c for op, c in plain_ops.items() if op != "ReorderOutput"),
            "tapped": sum(c for op, c in tapped_ops.items() if op != "ReorderOutput"),
        },
    )
    return result


def bench_inference(
    model: str,
    repeats: int,
    warmup: int,
    gap: float,
    workdir: Path,
    no_gap_check: bool,
    setup_rounds: int,
) -> dict[str, Any]:
    """Bare ORT vs the harness runner for each exporter of one model."""
    from parity.harness import RunConfig
    from parity.local import LocalSession as Session

    session = Session(RunConfig(model=model))
    results: dict[str, Any] = {"batch_shape": list(session.batch.shape), "taps": len(session.taps)}
    for index, exporter in enumerate(EXPORT_VARIANTS):
        print(f"[inference] {model} {exporter}", flush=True)
        results[exporter] = bench_variant(
            session,
            exporter,
            repeats,
            warmup,
            gap,
            workdir,
            no_gap_check and index == 0,
            setup_rounds,
        )
    return results


# --- section 3/4 -----------------------------------------------------------------------


def bench_cache(model: str, repeats: int, workdir: Path) -> dict[str, Any]:
    """Cold vs warm run_parity, each in a fresh subprocess, one new cache dir per pair."""
    pairs = []
    for index in range(repeats):
        cache = workdir / f"run-{model}-{index}"
        args = [model, str(cache / "artifacts")]
        print(f"[cache] {model} pair {index + 1}/{repeats}: cold, then warm", flush=True)
        cold = run_child(CHILD_RUN, args, cache)
        warm = run_child(CHILD_RUN, args, cache)
        pairs.append(
            {
                "cold": cold,
                "warm": warm,
                "speedup": cold["subprocess_wall_s"] / warm["subprocess_wall_s"],
                "warm_rebuilt": [r["variant"] for r in warm["results"] if r["built"] is not False],
                "cold_built": [r["variant"] for r in cold["results"] if r["built"]],
                "warm_export_events": [e for e in warm["events"] if "exporting" in e[1]],
            }
        )
        shutil.rmtree(cache, ignore_errors=True)

    def breakdown(run: dict[str, Any]) -> dict[str, float]:
        variants = sum(r["seconds"] for r in run["results"])
        return {
            "interpreter_s": run["subprocess_wall_s"] - run["total_s"],
            "import_parity_s": run["import_parity_s"],
            "torch_import_weights_fixtures_s": run["run_parity_s"] - variants - run["reference_s"],
            "reference_s": run["reference_s"],
            "variants_s": variants,
        }

    breakdowns = [breakdown(p["warm"]) for p in pairs]
    cold_breakdowns = [breakdown(p["cold"]) for p in pairs]
    cold_exports = [sum(r["export_s"] or 0 for r in p["cold"]["results"]) for p in pairs]
    kinds = ("cold", "warm")
    summary: dict[str, Any] = {
        "cold_s": median([p["cold"]["subprocess_wall_s"] for p in pairs]),
        "warm_s": median([p["warm"]["subprocess_wall_s"] for p in pairs]),
        "speedup": median([p["speedup"] for p in pairs]),
        "speedup_min": min(p["speedup"] for p in pairs),
        "speedup_max": max(p["speedup"] for p in pairs),
        "warm_rebuilt_any": any(p["warm_rebuilt"] or p["warm_export_events"] for p in pairs),
        "cold_built_all": all(len(p["cold_built"]) == len(p["cold"]["results"]) for p in pairs),
        "all_passed": all(p[kind]["passed"] for p in pairs for kind in kinds),
        "cold_exports_s": median(cold_exports),
        "warm_breakdown": {k: median([b[k] for b in breakdowns]) for k in breakdowns[0]},
        "cold_breakdown": {k: median([b[k] for b in cold_breakdowns]) for k in breakdowns[0]},
        # cold minus warm set-up (torch import + weights) in the same pair ~ calibration
        "calibration_saved_s": median(
            [
                c["torch_import_weights_fixtures_s"] - w["torch_import_weights_fixtures_s"]
                for c, w in zip(cold_breakdowns, breakdowns, strict=True)
            ]
        ),
    }
    for kind in kinds:
        summary[f"{kind}_vmhwm_kib"] = max(p[kind]["vmhwm_kib"] for p in pairs)
        summary[f"{kind}_vmhwm_kib_median"] = median([p[kind]["vmhwm_kib"] for p in pairs])
    return {"pairs": pairs, "summary": summary}


# --- report ----------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    from parity.lazy import package_version

    packages = ("torch", "torchvision", "onnx", "onnxruntime", "onnxscript", "numpy")
    return {
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "mem_gib": round(mem_kib / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": {p: package_version(p) for p in packages},
    }


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:.1f}"


def why_no_taps(entry: dict[str, Any]) -> str:
    spread = entry["per_round_ratio"]["harness_no_taps"]
    return (
        "`Runner.run` without taps adds only input checks and a dict around the same "
        f"`session.run`; per-round ratios spread {spread['p25']:.2f}–{spread['p75']:.2f}, so "
        "this is load on the machine: rerun, or raise --repeats"
    )


def why_taps(entry: dict[str, Any]) -> str:
    ratio = entry["ratio_of_medians"]
    ops = entry["optimized_ops"]
    reorders = ops["tapped"].get("ReorderOutput", 0) - ops["plain"].get("ReorderOutput", 0)
    lost = entry["non_reorder_nodes"]["tapped"] - entry["non_reorder_nodes"]["plain"]
    graph = ratio["tapped_graph_output_only"]
    return (
        f"the tapped graph alone (fetching only the output) is {graph:.2f}x bare "
        f"(+{reorders} NCHWc->NCHW ReorderOutput nodes, {lost:+d} other nodes, i.e. "
        f"{'no' if lost <= 0 else lost} fusions lost); the rest, "
        f"{ratio['harness_all_taps'] - graph:.2f}x, is fetching and copying "
        f"{mib(entry['fetched_bytes_all_taps'])} MiB of taps"
    )


def why_warm(summary: dict[str, Any], export: dict[str, Any] | None) -> str:
    b = summary["warm_breakdown"]
    needed = summary["cold_s"] / TARGET_WARM_SPEEDUP
    text = (
        f"the cache saves only the exports ({summary['cold_exports_s']:.1f} s) and the weights "
        f"calibration (~{summary['calibration_saved_s']:.1f} s); the warm "
        f"{summary['warm_s']:.1f} s is what every run pays: interpreter + `import parity` "
        f"{b['interpreter_s'] + b['import_parity_s']:.1f} s, torch(+torchvision) import + "
        f"weights load + fixtures {b['torch_import_weights_fixtures_s']:.1f} s, torch reference "
        f"{b['reference_s']:.1f} s, ORT sessions + runs + compare {b['variants_s']:.1f} s"
    )
    if export and needed < export["import_torch_s"] + b["interpreter_s"] + b["import_parity_s"]:
        text += (
            f"; 5x needs a warm run under {needed:.1f} s, less than starting Python and "
            f"importing torch+torchvision ({export['import_torch_s']:.1f} s), which the warm "
            "path needs for the weights hash in the cache key and the live reference"
        )
    return text


def render(data: dict[str, Any]) -> str:
    m = data["machine"]
    args = data["args"]
    lines = [
        START_MARK,
        "## ONNX path (`bench/bench_onnx.py`)",
        "",
        f"- date: {data['date']}",
        f"- command: `{data['command']}` ({data['elapsed_s']:.0f} s)",
        f"- machine: {m['nproc']} CPUs ({m['affinity']} usable), {m['cpu']}, "
        f"{m['mem_gib']} GiB, Linux {m['kernel']}, Python {m['python']}; load average "
        f"(1/5/15 min) {' '.join(data['loadavg_start'])} at start, "
        f"{' '.join(data['loadavg_end'])} at end (other work shares the machine)",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        f"- ORT sessions: {args['threads']} intra-op threads, inter-op 1, ORT_ENABLE_ALL, "
        "CPUExecutionProvider (the runner's options)",
        f"- inference: {args['warmup']} warm-up calls each, then {args['repeats']} interleaved "
        f"rounds (order rotated every round), {args['gap_ms']:.0f} ms idle before every call; "
        f"subprocess figures: median of {args['process_repeats']} runs, each on a fresh cache dir",
        "",
    ]
    # summary of targets
    lines += [
        "### Targets",
        "",
        "| target | model | measured | verdict | why (misses) |",
        "|---|---|---|---|---|",
    ]
    for model, res in data["models"].items():
        inference = res.get("inference", {})
        for exporter in EXPORT_VARIANTS:
            if exporter not in inference:
                continue
            entry = inference[exporter]
            ratio = entry["ratio_of_medians"]
            r0 = ratio["harness_no_taps"]
            lines.append(
                f"| harness/bare, no taps ≤ {TARGET_NO_TAPS}x | {model} {exporter} | {r0:.2f}x | "
                f"{verdict(r0 <= TARGET_NO_TAPS)} | "
                f"{'' if r0 <= TARGET_NO_TAPS else why_no_taps(entry)} |"
            )
            r1 = ratio["harness_all_taps"]
            lines.append(
                f"| harness/bare, all {inference['taps']} taps ≤ {TARGET_ALL_TAPS:g}x | "
                f"{model} {exporter} | {r1:.2f}x | {verdict(r1 <= TARGET_ALL_TAPS)} | "
                f"{'' if r1 <= TARGET_ALL_TAPS else why_taps(entry)} |"
            )
        if "cache" in res:
            s = res["cache"]["summary"]
            ok = s["speedup"] >= TARGET_WARM_SPEEDUP
            why = "" if ok else why_warm(s, res.get("export", {}).get("summary"))
            lines.append(
                f"| warm/cold run_parity speedup ≥ {TARGET_WARM_SPEEDUP:g}x | {model} | "
                f"{s['speedup']:.2f}x ({s['cold_s']:.1f} s → {s['warm_s']:.1f} s) | "
                f"{verdict(ok)} | {why} |"
            )
            rebuilt = s["warm_rebuilt_any"]
            lines.append(
                f"| warm run re-exports nothing | {model} | "
                f"{'re-exported!' if rebuilt else 'all artifacts built=False'} | "
                f"{verdict(not rebuilt)} | "
                f"{'a warm run rebuilt an artifact: unstable cache key' if rebuilt else ''} |"
            )
            if model == RSS_MODEL:
                peak = max(s["cold_vmhwm_kib"], s["warm_vmhwm_kib"]) / 2**20
                ok = peak < TARGET_PEAK_RSS_GIB
                lines.append(
                    f"| peak RSS of a full run < {TARGET_PEAK_RSS_GIB:g} GiB | {model} | "
                    f"{peak:.2f} GiB | {verdict(ok)} | "
                    f"{'' if ok else 'see section 4'} |"
                )
    lines.append("")

    # 1. export
    lines += [
        "### 1. Cold export (fresh cache dir per run)",
        "",
        "Export seconds are the exporter function (torch.onnx.export + onnx.checker full "
        "check + reload), as recorded in the artifact's meta.json; wall adds cache keying, "
        "hashing and the atomic write. Dynamo runs first in each process, as in `run_parity`, "
        "so it also pays torch.export's first-use initialisation.",
        "",
        "| model | import torch+torchvision s | import onnx+onnxscript+ort s | weights "
        "calibration s | exporter | export s (median) | min–max | wall s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model, res in data["models"].items():
        if "export" not in res:
            continue
        s = res["export"]["summary"]
        for exporter, e in s["exports"].items():
            lines.append(
                f"| {model} | {s['import_torch_s']:.2f} | {s['import_onnx_s']:.2f} | "
                f"{s['calibration_s']:.2f} | {exporter} | {e['export_s']:.2f} | "
                f"{e['export_s_min']:.2f}–{e['export_s_max']:.2f} | {e['wall_s']:.2f} |"
            )
    lines.append("")

    # 2. inference
    lines += [
        "### 2. Inference on the 16-image fixture batch",
        "",
        "Medians in ms. *bare*: an `onnxruntime.InferenceSession` made directly; *harness*: "
        "`OnnxRuntimeRunner.run(batch, taps=())` and `run(batch, all taps)`; *tapped graph, "
        "output only*: the runner's tapped graph fetching just the logits (isolates the graph "
        "change from the per-tap fetch). Ratios are ratios of medians; p25–p75 of the "
        "per-round ratio in brackets (each round's calls are adjacent in time, so that "
        "spread shows how much other load on the machine moved the figures).",
        "",
        "| model | exporter | bare | harness, no taps | ratio | harness, all taps | ratio | "
        "tapped graph, output only | ratio | taps fetched |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model, res in data["models"].items():
        inference = res.get("inference", {})
        for exporter in EXPORT_VARIANTS:
            if exporter not in inference:
                continue
            e = inference[exporter]
            med = e["median_s"]

            def cell(name: str, e: dict[str, Any] = e) -> str:
                ratio, pr = e["ratio_of_medians"][name], e["per_round_ratio"][name]
                return f"{ratio:.2f}x [{pr['p25']:.2f}–{pr['p75']:.2f}]"

            lines.append(
                f"| {model} | {exporter} | {ms(med['bare'])} | {ms(med['harness_no_taps'])} | "
                f"{cell('harness_no_taps')} | {ms(med['harness_all_taps'])} | "
                f"{cell('harness_all_taps')} | {ms(med['tapped_graph_output_only'])} | "
                f"{cell('tapped_graph_output_only')} | {e['fetched_values']} values, "
                f"{mib(e['fetched_bytes_all_taps'])} MiB |"
            )
    lines += [
        "",
        "What ORT runs after ORT_ENABLE_ALL (op histogram of the optimized graph), and what "
        "the runner pays to set up (one runner = a plain session at `activate()` plus a tapped "
        "session at the first `run(batch, taps)`):",
        "",
        "| model | exporter | plain graph nodes | tapped graph nodes | ReorderOutput plain → "
        "tapped | other nodes plain → tapped | runner.activate() s | tapped session (load + "
        "locate + session) s | RSS of one unused session MiB | set-up + first tapped run s: "
        "stock runner → single-session runner |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model, res in data["models"].items():
        inference = res.get("inference", {})
        for exporter in EXPORT_VARIANTS:
            if exporter not in inference:
                continue
            e = inference[exporter]
            ops, nr = e["optimized_ops"], e["non_reorder_nodes"]
            lines.append(
                f"| {model} | {exporter} | {sum(ops['plain'].values())} | "
                f"{sum(ops['tapped'].values())} | {ops['plain'].get('ReorderOutput', 0)} → "
                f"{ops['tapped'].get('ReorderOutput', 0)} | {nr['plain']} → {nr['tapped']} | "
                f"{e['activate_s']:.3f} | {e['tapped_session_s']:.3f} | "
                f"{e['extra_session_rss_kib'] / 1024:.0f} | "
                f"{e['setup']['median_s']['stock']:.3f} → {e['setup']['median_s']['single']:.3f} "
                f"({e['setup']['ratio_of_medians']['single']:.2f}x) |"
            )
    lines.append("")

    # 3. cache
    lines += [
        "### 3. Warm cache: `run_parity` cold vs warm, each in a fresh subprocess",
        "",
        "Subprocess wall time (interpreter start to exit, imports included). Warm breakdown: "
        "interpreter + `import parity` / torch import + weights load + fixtures / torch "
        "reference / the two ORT variants (artifact lookup, sessions, runs, compare).",
        "",
        "| model | cold s | warm s | speedup (median per pair, min–max) | exports in cold s | "
        "warm breakdown s | artifacts rebuilt by warm run | all verdicts passed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model, res in data["models"].items():
        if "cache" not in res:
            continue
        s = res["cache"]["summary"]
        b = s["warm_breakdown"]
        lines.append(
            f"| {model} | {s['cold_s']:.2f} | {s['warm_s']:.2f} | {s['speedup']:.2f}x "
            f"({s['speedup_min']:.2f}–{s['speedup_max']:.2f}) | {s['cold_exports_s']:.2f} | "
            f"{b['interpreter_s'] + b['import_parity_s']:.2f} / "
            f"{b['torch_import_weights_fixtures_s']:.2f} / {b['reference_s']:.2f} / "
            f"{b['variants_s']:.2f} | {'yes' if s['warm_rebuilt_any'] else 'none'} | "
            f"{'yes' if s['all_passed'] else 'NO'} |"
        )
    lines.append("")

    # 4. RSS
    lines += [
        "### 4. Peak RSS of a full `run_parity` (the subprocess's VmHWM at exit)",
        "",
        "Read from `/proc/self/status` in the child: its `ru_maxrss` (and the parent's "
        "`RUSAGE_CHILDREN`) inherits this benchmark's own, larger RSS across fork+exec. "
        "Max over the runs, median in brackets.",
        "",
        "| model | cold run MiB | warm run MiB | target | verdict |",
        "|---|---|---|---|---|",
    ]
    for model, res in data["models"].items():
        if "cache" not in res:
            continue
        s = res["cache"]["summary"]
        peak = max(s["cold_vmhwm_kib"], s["warm_vmhwm_kib"]) / 2**20
        target = f"< {TARGET_PEAK_RSS_GIB:g} GiB" if model == RSS_MODEL else "(info)"
        judged = verdict(peak < TARGET_PEAK_RSS_GIB) if model == RSS_MODEL else ""
        cells = [
            f"{s[f'{kind}_vmhwm_kib'] / 1024:.0f} ({s[f'{kind}_vmhwm_kib_median'] / 1024:.0f})"
            for kind in ("cold", "warm")
        ]
        lines.append(f"| {model} | {' | '.join(cells)} | {target} | {judged} |")
    lines.append("")

    # 5. sizes
    lines += [
        "### 5. Artifact sizes",
        "",
        "| model | artifact | MiB | bytes | ONNX nodes | opset | sha256 |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, res in data["models"].items():
        if "export" not in res:
            continue
        run = res["export"]["runs"][0]
        for name, size in sorted(run["weights_files"].items()):
            lines.append(f"| {model} | weights `{name}` | {mib(size)} | {size} | | | |")
        for exporter, e in run["exports"].items():
            lines.append(
                f"| {model} | {exporter} `model.onnx` | {mib(e['bytes'])} | {e['bytes']} | "
                f"{e['nodes']} | {e['opset']} | `{e['sha256'][:12]}` |"
            )
    lines.append("")

    if data.get("findings"):
        lines += ["### Findings", ""]
        lines += [f"- {finding}" for finding in data["findings"]]
        lines.append("")
    lines.append(END_MARK)
    return "\n".join(lines)


def findings(data: dict[str, Any]) -> list[str]:
    """Observations computed from the figures (the narrative lives in RESULTS.md)."""
    out = []
    costs = []
    for model, res in data["models"].items():
        for exporter in EXPORT_VARIANTS:
            e = res.get("inference", {}).get(exporter)
            if e:
                med = e["setup"]["median_s"]
                costs.append(
                    f"{model}/{exporter}: `activate()` {e['activate_s']:.2f} s, set-up + first "
                    f"tapped run {med['stock']:.2f} s → {med['single']:.2f} s with one session "
                    f"({med['single'] - med['stock']:+.2f} s), and "
                    f"{e['extra_session_rss_kib'] / 1024:.0f} MiB resident while the runner lives"
                )
    if costs:
        out.append(
            "Two ORT sessions per variant on the harness path: `OnnxRuntimeRunner._activate` "
            "loads and optimises a plain session that `Session.check` never runs (it always "
            "passes taps, so `_tapped_session` re-reads the file with `onnx.load` and builds a "
            "second session); the plain one only supplies the input/output names. Measured "
            "against a bench-only subclass whose `_activate` reads the names from the graph: "
            + "; ".join(costs)
            + "."
        )
    note = (
        "Method note: ORT's intra-op workers keep spinning for tens of ms after a `run()` "
        "returns; on 2 cores, a call made right after another session's call competes with "
        "those spinning threads, so every timed call here is preceded by a "
        f"{data['args']['gap_ms']:.0f} ms idle gap."
    )
    for model, res in data["models"].items():
        for exporter in EXPORT_VARIANTS:
            entry = res.get("inference", {}).get(exporter, {})
            if "no_gap" in entry:
                slower = {
                    name: entry["no_gap"]["median_s"][name] / entry["median_s"][name]
                    for name in entry["median_s"]
                }
                note += (
                    f" Check on {model}/{exporter}, same calls back to back without the gap: "
                    + ", ".join(f"{name} {ratio:.2f}x" for name, ratio in slower.items())
                    + " the gapped medians."
                )
    out.append(note)
    return out


def write_results(markdown: Path, region: str) -> None:
    if markdown.is_file():
        text = markdown.read_text()
        if START_MARK in text and END_MARK in text:
            head, _, rest = text.partition(START_MARK)
            _, _, tail = rest.partition(END_MARK)
            text = head + region + tail
        else:
            text = text.rstrip("\n") + "\n\n" + region + "\n"
    else:
        text = "# Benchmarks\n\n" + region + "\n"
    markdown.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mobilenet_v2", "resnet18"])
    parser.add_argument("--repeats", type=int, default=20, help="inference rounds (section 2)")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up calls per method")
    parser.add_argument(
        "--process-repeats", type=int, default=3, help="subprocess runs per measurement (1, 3)"
    )
    parser.add_argument(
        "--setup-rounds", type=int, default=5, help="runner set-up rounds (double session)"
    )
    parser.add_argument(
        "--gap-ms", type=float, default=60.0, help="idle time before each timed inference call"
    )
    parser.add_argument("--markdown", type=Path, default=ROOT / "bench" / "RESULTS.md")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results_onnx.json")
    args = parser.parse_args()

    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="bench_onnx-"))
    main_cache = workdir / "main-cache"
    # Before parity is imported: the weights cache follows PARITY_CACHE_DIR.
    os.environ["PARITY_CACHE_DIR"] = str(main_cache)
    os.chdir(ROOT)
    data: dict[str, Any] = {
        "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join([".venv/bin/python", "bench/bench_onnx.py", *sys.argv[1:]]),
        "args": {
            "models": args.models,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "process_repeats": args.process_repeats,
            "gap_ms": args.gap_ms,
            "setup_rounds": args.setup_rounds,
            "threads": 2,
        },
        "models": {},
    }

    def checkpoint(stage: str) -> None:
        print(f"[{time.perf_counter() - started:.0f} s] {stage} done", flush=True)
        args.json.write_text(json.dumps(data, indent=1, sort_keys=True, default=str) + "\n")

    try:
        for model in args.models:
            data["models"][model] = {
                "export": bench_export(model, args.process_repeats, workdir, main_cache)
            }
        checkpoint("section 1 (export)")
        for model in args.models:
            data["models"][model]["inference"] = bench_inference(
                model,
                args.repeats,
                args.warmup,
                args.gap_ms / 1000,
                workdir,
                no_gap_check=model == args.models[0],
                setup_rounds=args.setup_rounds,
            )
        checkpoint("section 2 (inference)")
        for model in args.models:
            data["models"][model]["cache"] = bench_cache(model, args.process_repeats, workdir)
        checkpoint("sections 3-4 (cache, RSS)")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    data["machine"] = machine_info()
    data["elapsed_s"] = time.perf_counter() - started
    data["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    data["findings"] = findings(data)
    args.json.write_text(json.dumps(data, indent=1, sort_keys=True, default=str) + "\n")
    write_results(args.markdown, render(data))
    print(render(data))


if __name__ == "__main__":
    main()
