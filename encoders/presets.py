"""Named model + training configurations compared by the quality benchmark."""

from __future__ import annotations

from dataclasses import dataclass, field

from encoders.model import EncoderConfig
from encoders.train import TrainConfig


@dataclass(frozen=True)
class Preset:
    name: str
    encoder: EncoderConfig
    train: TrainConfig = field(default_factory=TrainConfig)
    about: str = ""


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "sasrec",
            # SASRec's published ML-1M setting: 2 blocks, 1 head, d=50, FFN width d, dropout
            # 0.2, the last 200 events; attention window = max length, so every position sees
            # the whole (truncated) sequence as in SASRec
            EncoderConfig(d_model=50, n_layers=2, n_heads=1, window=200, ffn_mult=1, dropout=0.2),
            TrainConfig(
                max_seq_len=200,
                batch_size=128,
                last_chunk_only=True,
                id_dropout=0.0,
                epochs=200,
                patience=10,
            ),
            about="SASRec configuration (2 blocks, 1 head, d=50, L=200), same code",
        ),
        Preset(
            "streamrec",
            EncoderConfig(d_model=64, n_layers=2, n_heads=2, window=50, dropout=0.1),
            # whole histories in chunks of 200 with their serving context; a cosine schedule
            # over 50 epochs (about an hour on ML-1M here), ended by early stopping (on ML-1M
            # at epoch 25 of 50, best 22)
            TrainConfig(
                max_seq_len=200,
                batch_size=64,
                lr=2e-3,
                lr_schedule="cosine",
                epochs=50,
                patience=3,
            ),
            about="serving default: 2 blocks, 2 heads, d=64, window 50 (context 99 events)",
        ),
    )
}
