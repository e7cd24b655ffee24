"""Fault scenarios on a real broker: kill -9 and restart, broker restart, workers joining and
leaving, local state lost. ``harness`` holds the machinery (worker processes, a deterministic
event log, quiescence, reading the final tables, comparing with ``streamrec.reference``);
``scenarios`` runs each fault end to end and returns its figures. Used by ``tests/faults`` (small
sizes, CI) and ``bench/faults.py`` (the big runs).
"""
