"""``torch_compile`` from its cached AOTInductor package vs ``torch.compile`` in the process.

    python bench/compile_cache.py [--model mobilenet_v2]

Runs the card's module once through ``torch.compile`` (inductor, JIT: what the variant
did before it was cached; the taps by forward hooks) and once from the cached package
(built first if missing), on the fixture batch, and prints per tap whether the two are
bitwise equal and their largest difference. The wall times of whole ``parity run``
processes are ``bench/warm_ab.py``'s (``bench/compile_cache.md``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from parity.backends.torch.runner import TorchRunner
from parity.local import LocalSession
from parity.runconfig import RunConfig, make_runner
from parity.variants import VARIANTS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenet_v2")
    args = parser.parse_args()
    session = LocalSession(RunConfig(model=args.model))
    variant = VARIANTS["torch_compile"]
    start = time.perf_counter()
    artifact = session.artifact(variant)
    seconds = time.perf_counter() - start
    print(f"package: {artifact.path} (built now: {artifact.built}, {seconds:.1f} s)")
    with make_runner(variant, artifact, session.config.threads) as runner:
        start = time.perf_counter()
        cached = runner.run(session.batch, session.taps)
        print(f"package load + run: {time.perf_counter() - start:.1f} s")
    jit = TorchRunner("jit", session.model().module, session.config.threads, compile=True)
    with jit:
        start = time.perf_counter()
        traced = jit.run(session.batch, session.taps)
        print(f"torch.compile trace + compile + run: {time.perf_counter() - start:.1f} s")
    print("\n| tap | bitwise equal | max abs diff |\n|---|---|---|")
    for name in traced:
        diff = float(np.abs(traced[name] - cached[name]).max())
        print(f"| {name} | {np.array_equal(traced[name], cached[name])} | {diff:.3g} |")


if __name__ == "__main__":
    main()
