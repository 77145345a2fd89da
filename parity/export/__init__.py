"""Exporter functions: torch model (or an upstream artifact) -> artifact files.

An exporter is a function ``export(ctx, out_dir, options) -> metadata`` that writes its files
into ``out_dir``; :mod:`parity.artifacts` caches the result by a content key (weights hash,
preprocessing hash, exporter name and options, package versions, upstream artifacts). It is
declared by one :class:`parity.backends.Exporter` in the backend whose framework makes it.
The functions build on the backends' adapters (:mod:`parity.backends`): this package sits
above them, and no backend imports it.
"""
