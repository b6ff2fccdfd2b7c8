"""Compensation passes: sinks of removed channels re-weight their remaining inputs (OBS)."""
