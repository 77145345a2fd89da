"""Converter environments: specs are exact pins, keyed by hash and Python; an absent
environment makes its variants n/a with the install command; a converter that crashes,
overruns or reaches for the network is one RuntimeFailure line naming its log."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import pytest

from parity.applicability import not_applicable_reason
from parity.cli import main
from parity.converters import MARKER, ConverterSpec, parse_spec, spec, specs
from parity.converters.environment import install, last_error, run_converter
from parity.errors import ParityError, RuntimeFailure
from parity.variants import VARIANTS
from parity.zoo import get_card


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PARITY_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _fake(name: str = "fake", timeout: float = 60) -> ConverterSpec:
    return ConverterSpec(name, "a test converter", ("3.11",), "pass", ("six==1.17.0",), timeout)


def _made(converter: ConverterSpec) -> Path:
    """An environment whose Python is this interpreter, marked complete (what install leaves,
    without the minutes of pip)."""
    env = converter.path()
    (env / "bin").mkdir(parents=True)
    (env / "bin" / "python").symlink_to(sys.executable)
    (env / MARKER).write_text("{}")
    return env


def test_the_onnx2tf_spec_is_exact_pins_tested_on_this_python():
    onnx2tf = spec("onnx2tf")
    assert "onnx2tf==1.29.24" in onnx2tf.requirements
    assert {"tensorflow==2.19.0", "numpy==1.26.4"} <= set(onnx2tf.requirements)
    assert all("==" in r for r in onnx2tf.requirements) and "3.11" in onnx2tf.python
    assert list(specs()) == sorted(specs()) and "onnx2tf" in specs()


def test_the_key_changes_with_the_pins_and_the_python_and_nothing_else(empty_cache: Path):
    base = _fake()
    assert base.key() == _fake(timeout=5).key()  # the timeout is no part of the environment
    assert base.key().startswith("py3.11-") or base.key().startswith(f"py{sys.version_info[1]}")
    assert base.key("3.11") != base.key("3.12")
    bumped = dataclasses.replace(base, requirements=("six==1.16.0",))
    assert bumped.key() != base.key()
    reordered = dataclasses.replace(base, requirements=("a==1", "b==2"))
    assert reordered.key() == dataclasses.replace(base, requirements=("b==2", "a==1")).key()
    assert base.path() == empty_cache / "converters" / f"fake-{base.key()}"


def test_a_spec_with_a_loose_pin_or_a_missing_key_is_refused(tmp_path: Path):
    with pytest.raises(ParityError, match="not pinned"):
        ConverterSpec("x", "x", ("3.11",), "pass", ("numpy>=1",), 1)
    broken = tmp_path / "x.toml"
    broken.write_text('name = "x"\n')
    with pytest.raises(ParityError, match="not a converter spec"):
        parse_spec(broken)
    with pytest.raises(ParityError, match="unknown converter 'nope'; known: onnx2tf"):
        spec("nope")


def test_without_the_environment_onnx2tf_is_na_with_the_install_command(empty_cache: Path, capsys):
    card = get_card("mobilenet_v2")
    for name in ("onnx2tf_fp32", "onnx2tf_fp16", "onnx2tf_dynamic"):
        reason = not_applicable_reason(VARIANTS[name], card)
        assert reason is not None and "`parity converters install onnx2tf`" in reason, reason
    assert main(["converters", "list"]) == 0
    assert "no: parity converters install onnx2tf" in capsys.readouterr().out
    assert main(["list"]) == 0
    assert "no: parity converters" in capsys.readouterr().out  # the column wraps


def test_a_made_environment_makes_the_variants_apply(empty_cache: Path):
    env = _made(spec("onnx2tf"))
    assert spec("onnx2tf").installed() == env
    assert not_applicable_reason(VARIANTS["onnx2tf_fp32"], get_card("mobilenet_v2")) is None
    (env / MARKER).unlink()  # an interrupted install is no environment
    assert spec("onnx2tf").installed() is None


def test_a_converter_crash_is_one_line_naming_the_log(empty_cache: Path, tmp_path: Path):
    converter = _fake()
    _made(converter)
    log = tmp_path / "run.log"
    crash = "import sys; print('converting'); sys.exit('ValueError: unsupported op Foo')"
    with pytest.raises(RuntimeFailure) as failed:
        run_converter(converter, ["-c", crash], tmp_path, log, 60)
    message = str(failed.value)
    assert message.startswith("converter fake failed (exit 1): ValueError: unsupported op Foo; ")
    kept = Path(message.rpartition("log: ")[2])  # kept: the export's folder is removed
    assert kept.parent == empty_cache / "logs" and "converting" in kept.read_text()
    assert run_converter(converter, ["-c", "print('ok')"], tmp_path, log, 60) > 0
    assert log.read_text() == "ok\n"


def test_a_converter_over_its_time_is_killed(empty_cache: Path, tmp_path: Path):
    converter = _fake()
    _made(converter)
    with pytest.raises(RuntimeFailure, match=r"over its 0.5 s limit, killed; log: "):
        run_converter(converter, ["-c", "import time; time.sleep(30)"], tmp_path,
                      tmp_path / "log", 0.5)  # fmt: skip


def test_a_converter_cannot_reach_the_network(empty_cache: Path, tmp_path: Path):
    """A converter that tries to download fails at once, visibly (offline-safe runs)."""
    converter = _fake()
    _made(converter)
    fetch = "import urllib.request; urllib.request.urlopen('http://example.com', timeout=20)"
    # Refused by the proxy that leads nowhere (without it: a DNS error here, or a page)
    with pytest.raises(RuntimeFailure, match=r"URLError: .*Connection refused"):
        run_converter(converter, ["-c", fetch], tmp_path, tmp_path / "log", 60)


def test_an_absent_environment_at_run_time_is_a_failed_variant(empty_cache: Path, tmp_path):
    with pytest.raises(RuntimeFailure, match="parity converters install fake"):
        run_converter(_fake(), ["-c", "pass"], tmp_path, tmp_path / "log", 5)


def test_install_refuses_an_untested_python_and_an_unknown_name(empty_cache: Path, capsys):
    other = dataclasses.replace(_fake(), python=("2.7",))
    with pytest.raises(ParityError, match="tested on Python 2.7"):
        install(other)
    assert main(["converters", "install", "nope"]) == 2
    assert "unknown converter 'nope'" in capsys.readouterr().err


def test_install_of_a_made_environment_does_nothing(empty_cache: Path):
    env = _made(_fake())
    (env / MARKER).write_text('{"name": "fake", "seconds": 1}')
    said: list[str] = []
    assert install(_fake(), progress=said.append) == {"name": "fake", "seconds": 1}
    assert said == [f"fake: already made at {env}"]
    assert os.path.islink(env / "bin" / "python")


def test_the_error_line_is_the_raised_exception_not_the_advice_after_it(tmp_path: Path):
    """onnx2tf prints its traceback, then coloured advice lines that all say ERROR."""
    log = tmp_path / "log"
    log.write_text(
        "INFO: converting\nTraceback (most recent call last):\n  File 'x', line 1\n"
        "ValueError: Depth of input (56) is not a multiple of input depth of filter (24)\n"
        "\x1b[31mERROR:\x1b[0m Also, for models that include NonMaxSuppression, try -onwdt\n"
    )
    assert last_error(log) == (
        "ValueError: Depth of input (56) is not a multiple of input depth of filter (24)"
    )
    log.write_text("\x1b[31mERROR:\x1b[0m the input has no name\nbye\n")
    assert last_error(log) == "ERROR: the input has no name"


@pytest.mark.heavy
def test_a_converter_crash_through_parity_run_fails_the_variant_with_exit_1(
    empty_cache: Path, tmp_path: Path, capsys
):
    """An onnx2tf environment whose Python has no onnx2tf: the export fails (exit 1), the
    report's error is the converter's one line and names its kept log."""
    _made(spec("onnx2tf"))
    report = tmp_path / "report.json"
    code = main(["run", "-q", "-m", "mobilenet_v2", "-r", "onnx2tf_fp32", "--json", str(report)])
    capsys.readouterr()
    assert code == 1
    (variant,) = json.loads(report.read_text())["variants"]
    assert variant["status"] == "error", variant
    assert "converter onnx2tf failed (exit 1): " in variant["error"], variant["error"]
    assert "No module named onnx2tf" in variant["error"] and "log: " in variant["error"]
