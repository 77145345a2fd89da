"""An exported file and what is known about it (:class:`Artifact`): a value every layer may
name (a failed runtime's error carries one) without importing the cache that makes it
(:mod:`parity.artifacts`, which imports the backend registry).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any


@dataclasses.dataclass(frozen=True)
class Artifact:
    """One exported file and what is known about it."""

    exporter: str
    path: Path
    key: str
    metadata: dict[str, Any]
    #: True if it was built in this process (False: read from the cache).
    built: bool

    @property
    def size_bytes(self) -> int:
        return int(self.metadata["bytes"])
