"""Runners: one per runtime, one interface (:class:`parity.runtimes.base.Runner`)."""
