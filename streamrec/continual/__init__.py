"""Continual training: the model learns from the stream (`streamrec trainer`).

window (bounded recent sequences) -> cycle (fine-tune the serving checkpoint on them through the
one training path) -> gate (the candidate against the serving model on newer held-out events)
-> publish (atomically, where the workers poll). The Kafka side is trainer.py; the rest has no
Kafka in it.
"""
