"""The golden record of one tap of one image: stored in full, or as a sketch.

What is stored per tap (chosen to keep every default model's goldens a few MB):

* small taps (logits, pooled features: <= FULL_LIMIT values) are stored in full;
* larger activations are stored as a *sketch*: the tensor's max |value| (its scale), a
  strided subsample of SAMPLE values, and a CountSketch of COUNT_SKETCH buckets. The
  subsample measures element-wise error (max_abs_norm) against the stored scale; the
  CountSketch is a random projection that preserves L2 norms, so cosine and SQNR
  estimated from it see an error *anywhere* in the tensor, even one the subsample
  misses. Hashes are integer arithmetic, fixed forever (not a numpy RNG stream).

The store that writes and reads these records is :mod:`parity.golden`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np

from parity.compare import REL_FLOOR, TapMetrics, tap_metrics

FULL_LIMIT = 4096
SAMPLE = 512
COUNT_SKETCH = 1024


def _hashes(size: int) -> tuple[np.ndarray, np.ndarray]:
    """CountSketch bucket and sign of every index: the splitmix64 finalizer, fixed forever.

    A full-avalanche hash matters: a plain multiplicative hash of sequential indices puts
    spatially neighbouring values into buckets in a regular pattern, which biased SQNR
    estimates on image-like activations by ~2 dB; splitmix64 tracks the full-tensor SQNR
    within ~0.3 dB (measured on litert_int8 taps of mobilenet_v2).
    """
    z = np.arange(size, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    bucket = (z % np.uint64(COUNT_SKETCH)).astype(np.int64)
    sign = 1.0 - 2.0 * ((z >> np.uint64(32)) & np.uint64(1)).astype(np.float64)
    return bucket, sign


def _sample_indices(size: int) -> np.ndarray:
    return np.linspace(0, size - 1, SAMPLE).round().astype(np.int64)


@dataclasses.dataclass(frozen=True)
class TapRecord:
    """What the golden holds for one tap of one image."""

    shape: tuple[int, ...]
    full: np.ndarray | None = None
    scale: float = 0.0
    sample: np.ndarray | None = None
    sketch: np.ndarray | None = None

    @classmethod
    def of(cls, value: np.ndarray) -> TapRecord:
        """Record one image's tap (no batch axis)."""
        value = np.asarray(value, dtype=np.float32)
        if value.size <= FULL_LIMIT:
            return cls(value.shape, full=value)
        flat = value.reshape(-1).astype(np.float64)
        bucket, sign = _hashes(flat.size)
        sketch = np.bincount(bucket, weights=flat * sign, minlength=COUNT_SKETCH)
        return cls(
            value.shape,
            scale=float(np.abs(flat).max()),
            sample=flat[_sample_indices(flat.size)].astype(np.float32),
            sketch=sketch.astype(np.float32),
        )

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        if self.full is not None:
            return {f"{prefix}/full": self.full}
        assert self.sample is not None and self.sketch is not None
        return {
            f"{prefix}/scale": np.array(self.scale, dtype=np.float64),
            f"{prefix}/sample": self.sample,
            f"{prefix}/sketch": self.sketch,
            f"{prefix}/shape": np.array(self.shape, dtype=np.int64),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], prefix: str) -> TapRecord:
        if f"{prefix}/full" in arrays:
            full = arrays[f"{prefix}/full"]
            return cls(tuple(full.shape), full=full)
        return cls(
            tuple(int(d) for d in arrays[f"{prefix}/shape"]),
            scale=float(arrays[f"{prefix}/scale"]),
            sample=arrays[f"{prefix}/sample"],
            sketch=arrays[f"{prefix}/sketch"],
        )

    def compare(self, obtained: np.ndarray, logits: bool = False) -> TapMetrics:
        """Metrics of ``obtained`` (one image, no batch axis) against this record."""
        if tuple(obtained.shape) != self.shape:
            raise ValueError(
                f"shape {tuple(obtained.shape)} does not match the golden's {self.shape}"
            )
        if self.full is not None:
            return tap_metrics(self.full[None], obtained[None], logits=logits)
        got = TapRecord.of(obtained)
        assert self.sample is not None and self.sketch is not None
        assert got.sample is not None and got.sketch is not None
        ref_s, got_s = self.sample.astype(np.float64), got.sample.astype(np.float64)
        scale = max(self.scale, np.finfo(np.float64).tiny)
        diff = np.abs(got_s - ref_s)
        ref_k, got_k = self.sketch.astype(np.float64), got.sketch.astype(np.float64)
        noise = float(((got_k - ref_k) ** 2).sum())
        signal = float((ref_k**2).sum())
        denom = float(np.linalg.norm(ref_k) * np.linalg.norm(got_k))
        return TapMetrics(
            max_abs=float(diff.max()),
            max_abs_norm=float(diff.max() / scale),
            max_rel=float((diff / np.maximum(np.abs(ref_s), REL_FLOOR * scale)).max()),
            mean_abs=float(diff.mean()),
            rmse=float(np.sqrt((diff**2).mean())),
            cosine=float(ref_k @ got_k / denom) if denom > 0 else 1.0,
            sqnr_db=10 * math.log10(signal / noise) if noise > 0 else math.inf,
            scale=scale,
            worst_image=0,
        )
