"""Watching a pipeline: its shape and its live counters."""
