"""Impure: the metric catalogue and tracing set-up (one place declares every metric and span)."""
