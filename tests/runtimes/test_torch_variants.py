"""Torch variants that are not the reference: torch.compile and autocast on the CPU, CUDA.

Real torch on the real fixtures. Each variant runs on its own copy of the module and is
judged against the eager CPU reference, never handed the reference's outputs. A fault
(noise in one conv's weight of the module before it is compiled or autocast) must fail
the variant at that conv's tap. CUDA variants are ``n/a`` without a GPU, with the reason.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from parity.artifacts import ArtifactCache
from parity.backends import get_exporter
from parity.backends.torch.runner import cuda_unavailable
from parity.backends.torch_cpu.compile import vec_isa
from parity.backends.torch_cpu.runner import CompiledRunner
from parity.compare import VariantVerdict, compare_taps
from parity.errors import ArtifactError
from parity.faults import perturb_torch_conv
from parity.harness import Session, make_runner
from parity.variants import VARIANTS

pytestmark = [pytest.mark.torch, pytest.mark.torch_cpu]

CUDA = [name for name, v in VARIANTS.items() if v.family == "torch_cuda"]


@pytest.fixture(scope="module")
def no_gpu() -> str | None:
    """Why the CUDA variants cannot run here (``None`` with a GPU): asked by the tests that
    need it, not at collection (it imports torch)."""
    return cuda_unavailable()


@pytest.fixture
def gpu(no_gpu: str | None) -> None:
    """Skip the test, saying why, where no CUDA GPU is usable."""
    if no_gpu is not None:
        pytest.skip(f"CUDA variants: {no_gpu}")


def broken_verdict(
    session: Session, variant: str, target: str, noise: float, images: int = 16
) -> VariantVerdict:
    """The variant run on a copy of the module with one conv inside ``target`` perturbed,
    on the first ``images`` fixtures."""
    broken, _ = perturb_torch_conv(session.model().module, target, relative_noise=noise)
    with make_runner(VARIANTS[variant], broken, session.config.threads) as runner:
        obtained = runner.run(session.batch[:images], session.taps)
    reference = {name: value[:images] for name, value in session.reference.items()}
    card = session.card.name
    return compare_taps(card, variant, session.taps, reference, obtained, session.policy)


def assert_first_failure(verdict: VariantVerdict, target: str) -> None:
    assert verdict.first_failure is not None
    assert verdict.first_failure.tap.name == target, verdict.explain()
    index = [t.tap.name for t in verdict.taps].index(target)
    assert all(t.passed for t in verdict.taps[:index]), verdict.explain()


@pytest.fixture(scope="module")
def default_runs(module_runs: Callable[..., None]) -> None:
    """torch.compile and CPU bf16 on mobilenet_v2 in one prefetch (one torch worker)."""
    module_runs("mobilenet_v2", "torch_compile", "torch_cpu_bf16")


def test_compile_every_tap_within_the_fp32_budget(fp32_parity, session_for, default_runs):
    result = fp32_parity("mobilenet_v2", "torch_compile")
    session = session_for("mobilenet_v2")
    # Its own outputs, from its own compiled copy: never the reference's.
    obtained, _ = session.outputs(VARIANTS["torch_compile"])
    assert obtained["logits"] is not session.reference["logits"]
    assert result.verdict.taps[-1].metrics.max_abs_norm > 0


def test_compile_perturbed_conv_fails_at_its_tap(local_session_for: Callable[[str], Session]):
    """The compiled kernels of the cached package run on weights with one conv perturbed
    (loaded into it, no recompile): caught at that conv's tap."""
    session = local_session_for("mobilenet_v2")
    variant = VARIANTS["torch_compile"]
    broken, _ = perturb_torch_conv(session.model().module, "features.5", relative_noise=0.01)
    with make_runner(variant, session.artifact(variant), session.config.threads) as runner:
        runner.load_weights(broken.state_dict())
        obtained = runner.run(session.batch, session.taps)
    verdict = compare_taps(
        session.card.name, variant.name, session.taps, session.reference, obtained, session.policy
    )
    assert_first_failure(verdict, "features.5")


def test_compile_second_run_loads_the_package_compiled_for_this_isa(
    local_session_for: Callable[[str], Session], monkeypatch: pytest.MonkeyPatch
):
    """A later run (a new cache object on the same folder) reads the package, compiles
    nothing; the key holds the CPU's ISA, and a package of another ISA is refused."""
    session = local_session_for("mobilenet_v2")
    exporter = get_exporter("torch_compile")
    first = ArtifactCache(session.cache.root).get(exporter, session.context)
    later = ArtifactCache(session.cache.root).get(exporter, session.context)
    assert later.built is False and later.path == first.path
    assert later.metadata["runner_options"]["vec_isa"] == vec_isa()
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")  # kernels for another ISA
    assert session.cache.key(exporter, session.context) != later.key
    options = {**later.metadata["runner_options"], "vec_isa": "avx512"}
    with pytest.raises(ArtifactError, match="compiled for the avx512 vector ISA"):
        CompiledRunner("torch_compile", later.path, **options).activate()


def test_cpu_bf16_within_its_reduced_precision_budgets(
    session_for: Callable[[str], Session], default_runs: None
):
    session = session_for("mobilenet_v2")
    result = session.check(VARIANTS["torch_cpu_bf16"])
    assert result.passed, result.verdict.explain() if result.verdict else result.error
    taps = {t.tap.name: t for t in result.verdict.taps}
    # Judged on its own tables, not the fp32 ones: the stem is tight, the depth bands looser.
    assert (
        taps["stem"].budget.limits["min_sqnr_db"] > taps["features.17"].budget.limits["min_sqnr_db"]
    )
    assert taps["logits"].metrics.top1_agreement < 1.0  # bf16 really ran
    assert result.executed == "bfloat16 (autocast)"  # and the report says so
    assert {t.budget.precision for t in result.verdict.taps} == {"bf16"}


def test_cpu_bf16_perturbed_conv_fails_at_its_tap(local_session_for: Callable[[str], Session]):
    """30% weight noise in one conv (a wrong weight, not rounding): caught at its band."""
    session = local_session_for("mobilenet_v2")
    verdict = broken_verdict(session, "torch_cpu_bf16", "features.5", 0.3, images=4)
    assert_first_failure(verdict, "features.5")


@pytest.mark.parametrize("variant", CUDA)
def test_cuda_variants_are_not_applicable_without_a_gpu(
    no_gpu: str | None, session_for: Callable[[str], Session], variant: str
):
    if no_gpu is None:
        pytest.skip("a CUDA GPU is present: the variants run instead")
    result = session_for("mobilenet_v2").check(VARIANTS[variant])
    assert result.status == "n/a"
    assert result.reason == no_gpu and "torch.cuda.is_available() is False" in result.reason


@pytest.mark.torch_cuda
@pytest.mark.parametrize("variant", ["torch_cuda_fp32", "torch_cuda_channels_last"])
def test_cuda_strict_fp32_within_the_fp32_budget(gpu: None, fp32_parity, variant: str):
    fp32_parity("mobilenet_v2", variant)


@pytest.mark.torch_cuda
def test_cuda_fp32_perturbed_conv_fails_at_its_tap(
    gpu: None, local_session_for: Callable[[str], Session]
):
    session = local_session_for("mobilenet_v2")
    verdict = broken_verdict(session, "torch_cuda_fp32", "features.5", 0.01)
    assert_first_failure(verdict, "features.5")
