"""parity: make numerical drift between PyTorch and its deployed runtimes impossible to ship.

The public API (numpy-only imports; frameworks load lazily inside runners):

* :class:`~parity.preprocess.PreprocessSpec`, :func:`~parity.preprocess.preprocess` —
  the one fixed, hashed preprocessing.
* :func:`~parity.zoo.get_card`, :func:`~parity.zoo.list_models` — model cards.
* :class:`~parity.harness.RunConfig`, :func:`~parity.harness.run_parity`,
  :class:`~parity.harness.Session` — the live check.
* :class:`~parity.tolerances.TolerancePolicy` — budgets as data.
"""

from __future__ import annotations

__version__ = "0.1.0"
