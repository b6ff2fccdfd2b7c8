"""Compensation passes: sinks of removed channels re-weight their remaining inputs (OBS, obs.py;
greedy OBS selection, greedy.py) or take the removed inputs' means into their bias (FLAP, flap.py)."""
