"""The streamrec encoder, top to bottom: an item tower and a sliding-window causal transformer
user tower whose outputs are scored by inner product.

Why it looks the way it does:

* Serving runs the user tower *incrementally*: on every event it appends one token and attends
  over K/V cached for the last ``window`` events. For that O(W) step to equal a full forward pass
  over an arbitrarily long history, the network must never see absolute positions. So attention
  is sliding-window causal (position i sees i-W < j <= i) and the only positional signal is a
  learned per-head bias indexed by the distance i-j in [0, W) (T5/ALiBi style). A stack of
  ``n_layers`` such layers has a receptive field of ``n_layers*(window-1)+1`` events
  (``EncoderConfig.context_events``): that many most recent events rebuild a user's state exactly.
* Event tokens are built from the same item vectors that are scored (SASRec-style sharing), so
  an item unseen in training still gets a meaningful token from its features.
* Sequences are LEFT-padded everywhere (training, rebuilds, references): valid events occupy the
  last positions, so "the user's current vector" is always position -1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from encoders.item_features import ItemFeatures
from streamrec.events.schema import EVENT_TYPES

# Gaps are bucketed on a log scale from 0 s up to this; longer gaps share the top bucket.
GAP_MAX_SECONDS = 30 * 86400.0


@dataclass(frozen=True)
class EncoderConfig:
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 2
    window: int = 50  # attention window W in events, identical in training and serving
    ffn_mult: int = 4
    dropout: float = 0.1
    n_event_types: int = len(EVENT_TYPES)  # the shared event contract's type codes
    n_gap_buckets: int = 16
    n_item_ids: int = 1  # id-embedding rows incl. row 0 = unknown / unseen in training
    n_categories: int = 1  # incl. 0 = unknown
    n_price_buckets: int = 16  # incl. 0 = unknown
    title_buckets: int = 512

    def __post_init__(self) -> None:
        positive = (
            "d_model",
            "n_layers",
            "n_heads",
            "window",
            "ffn_mult",
            "n_event_types",
            "n_item_ids",
            "n_categories",
            "title_buckets",
        )
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"EncoderConfig.{name} must be a positive int, got {value!r}")
        # Bucket 0 is reserved (first event / unknown price); at least one real bucket is needed.
        for name in ("n_gap_buckets", "n_price_buckets"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 2:
                raise ValueError(f"EncoderConfig.{name} must be an int >= 2, got {value!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def context_events(self) -> int:
        """Most recent events needed to rebuild a user's state exactly (the stack's receptive
        field: each layer reaches W-1 events further back)."""
        return self.n_layers * (self.window - 1) + 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown EncoderConfig keys: {unknown}")
        return cls(**data)


def gap_bucket(gaps: Tensor, n_buckets: int = 16) -> Tensor:
    """Log-scale bucket of the seconds since the user's previous event.

    Bucket 0 means "first event" (a negative or NaN gap); buckets 1..n-1 split log(1+gap) evenly
    over [0, log(1+GAP_MAX_SECONDS)]. Computed in float64 so training and serving agree bit-for-bit
    whatever dtype the gaps arrive in.
    """
    g = gaps.to(torch.float64)
    first = ~(g >= 0)  # also catches NaN
    g = torch.where(first, torch.zeros_like(g), g).clamp(max=GAP_MAX_SECONDS)
    scale = (n_buckets - 2) / math.log1p(GAP_MAX_SECONDS)
    b = (1 + torch.floor(torch.log1p(g) * scale)).long().clamp(1, n_buckets - 1)
    return torch.where(first, torch.zeros_like(b), b)


def left_pad(
    seqs: Sequence[tuple[Sequence[int], Sequence[int], Sequence[float]]], n_gap_buckets: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Left-pad (item rows, types, gaps) sequences to [B, T]: rows, types, gap buckets, valid."""
    B, T = len(seqs), max(len(s[0]) for s in seqs)
    rows = torch.zeros((B, T), dtype=torch.long)
    types = torch.zeros((B, T), dtype=torch.long)
    gaps = torch.full((B, T), -1.0, dtype=torch.float64)
    valid = torch.zeros((B, T), dtype=torch.bool)
    for b, (r, t, g) in enumerate(seqs):
        n = len(r)
        rows[b, T - n :] = torch.as_tensor(r, dtype=torch.long)
        types[b, T - n :] = torch.as_tensor(t, dtype=torch.long)
        gaps[b, T - n :] = torch.as_tensor(g, dtype=torch.float64)
        valid[b, T - n :] = True
    return rows, types, gap_bucket(gaps, n_gap_buckets), valid


# --------------------------------------------------------------------------------------------
# Item tower


class ItemTower(nn.Module):
    """item vector = proj(gelu(W·x + b)) + id_embedding[id].

    x is the concatenated category one-hot, price-bucket one-hot and hashed title-word bag, so W·x is
    a sum of embedding rows. The id embedding adds item-specific detail for ids seen in training;
    its row 0 is pinned to zero so unseen items are described by their features alone.
    """

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        hidden = cfg.ffn_mult * cfg.d_model
        self.category = nn.Embedding(cfg.n_categories, hidden)
        self.price = nn.Embedding(cfg.n_price_buckets, hidden)
        # mean, not sum: a long title must not outweigh the category and price
        self.title = nn.EmbeddingBag(cfg.title_buckets, hidden, mode="mean")
        self.bias = nn.Parameter(torch.zeros(hidden))
        self.proj = nn.Linear(hidden, cfg.d_model)
        self.id_emb = nn.Embedding(cfg.n_item_ids, cfg.d_model, padding_idx=0)

    def forward(self, f: ItemFeatures) -> Tensor:
        h = (
            self.category(f.category)
            + self.price(f.price_bucket)
            + self.title(f.title_tokens, f.title_offsets)
            + self.bias
        )
        return self.proj(F.gelu(h)) + self.id_emb(f.id_index)


# --------------------------------------------------------------------------------------------
# User tower


def window_distances(positions: Tensor, window: int) -> Tensor:
    """For ring buffers of ``window`` slots where the event at position p lives in slot p % W:
    how many events back from ``positions`` [B] each slot's event is, [B, W] in [0, W)."""
    slots = torch.arange(window, device=positions.device)
    return (positions[:, None] - slots[None, :]) % window


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.n_heads, self.head_dim, self.window = cfg.n_heads, cfg.head_dim, cfg.window
        self.c_attn = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.c_proj = nn.Linear(cfg.d_model, cfg.d_model)
        # the only positional signal: one learned bias per head and distance i-j in [0, W)
        self.rel_bias = nn.Parameter(torch.zeros(cfg.n_heads, cfg.window))
        self.attn_dropout = nn.Dropout(cfg.dropout)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Full pass. x [B,T,C]; valid [B,T] (False = left padding). Returns the output and this
        layer's keys and values [B,H,T,hd] (for cache refills)."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = k.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        v = v.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        y = self.windowed_attention(q, k, v, valid)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y)), k, v

    def windowed_attention(self, q: Tensor, k: Tensor, v: Tensor, valid: Tensor) -> Tensor:
        """Sliding-window attention in blocks of W queries: block b attends to key blocks b-1
        and b only, so the cost is T*2W rather than T*T. Blocks are aligned to the END of the
        sequence (padding is added on the left). ``reference_attention`` is the plain T*T form."""
        B, H, T, hd = q.shape
        W = self.window
        n = -(-T // W)
        pad = n * W - T
        if pad:
            q, k, v = (F.pad(t, (0, 0, pad, 0)) for t in (q, k, v))
            valid = F.pad(valid, (pad, 0), value=False)

        def two_blocks(t: Tensor) -> Tensor:  # [B,H,n*W,hd] -> [B,H,n,2W,hd]: blocks b-1, b
            t = t.view(B, H, n, W, hd)
            return torch.cat([F.pad(t, (0, 0, 0, 0, 1, 0))[:, :, :n], t], dim=3)

        vb = valid.view(B, n, W)
        keys_valid = torch.cat([F.pad(vb, (0, 0, 1, 0), value=False)[:, :n], vb], dim=2)
        r = torch.arange(W, device=q.device)
        dist = r[:, None] + W - torch.arange(2 * W, device=q.device)[None, :]  # [W, 2W]
        bias = self.rel_bias[:, dist.clamp(0, W - 1)]  # [H,W,2W]
        bias = bias.masked_fill((dist < 0) | (dist >= W), float("-inf"))
        # A padding query keeps its own key (dist 0) so its softmax is never all -inf: its junk
        # output must stay finite, since 0 * NaN would leak through later layers' att @ v.
        ok = keys_valid[:, :, None, :] | (dist == 0)[None, None]  # [B,n,W,2W]
        mask = (
            bias[None, :, None]
            + torch.zeros_like(ok, dtype=q.dtype).masked_fill(~ok, float("-inf"))[:, None]
        )
        p = self.attn_dropout.p if self.training else 0.0
        y = F.scaled_dot_product_attention(
            q.view(B, H, n, W, hd), two_blocks(k), two_blocks(v), attn_mask=mask, dropout_p=p
        )
        return y.reshape(B, H, n * W, hd)[:, :, pad:]

    def tail(self, x: Tensor, valid: Tensor, n_out: int) -> tuple[Tensor, Tensor, Tensor]:
        """``forward`` for the last ``n_out`` positions only, with the keys and values of all:
        what a rebuild needs (``UserTower.prefill``). A kept query attends to its W-1
        predecessors, so ``x`` [B,T,C] ends with them: T <= n_out + W - 1 (or the whole
        history). The queries are one dense [n_out, T] slab, which is no larger than
        ``windowed_attention``'s blocks while n_out <= W (the default two layers)."""
        B, T, C = x.shape
        H, hd, W = self.n_heads, self.head_dim, self.window
        w_q, w_kv = self.c_attn.weight.split((C, 2 * C))
        b_q, b_kv = self.c_attn.bias.split((C, 2 * C))
        q = F.linear(x[:, T - n_out :], w_q, b_q).view(B, n_out, H, hd).transpose(1, 2)
        k, v = (
            t.view(B, T, H, hd).transpose(1, 2) for t in F.linear(x, w_kv, b_kv).split(C, dim=2)
        )
        at = torch.arange(T, device=x.device)
        dist = at[T - n_out :, None] - at[None, :]  # [n_out, T]
        bias = self.rel_bias[:, dist.clamp(0, W - 1)]  # [H,n_out,T]
        # as in windowed_attention: a padding query keeps its own key (a finite junk output)
        ok = (valid[:, None, :] & ((dist >= 0) & (dist < W))[None]) | (dist == 0)[None]
        mask = bias[None] + torch.where(ok, 0.0, float("-inf")).to(q.dtype)[:, None]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.c_proj(y.transpose(1, 2).reshape(B, n_out, C)), k, v

    def reference_attention(self, q: Tensor, k: Tensor, v: Tensor, valid: Tensor) -> Tensor:
        """The T*T form of ``windowed_attention`` (eval mode), kept to test it against."""
        T = q.shape[2]
        i = torch.arange(T, device=q.device)
        rel = i[:, None] - i[None, :]
        allowed = ((rel >= 0) & (rel < self.window))[None] & valid[:, None, :]
        allowed = (allowed | torch.eye(T, dtype=torch.bool, device=q.device)[None])[:, None]
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))
        att = att + self.rel_bias[:, rel.clamp(0, self.window - 1)]
        att = att.masked_fill(~allowed, float("-inf"))
        return F.softmax(att, dim=-1) @ v

    def step(
        self, x: Tensor, k_ring: Tensor, v_ring: Tensor, positions: Tensor, starts: Tensor
    ) -> Tensor:
        """One new event per user. x [B,C]; k_ring, v_ring [B,H,W,hd] are updated IN PLACE
        (the new key/value goes to slot position % W); positions [B] are the new events' positions
        and starts [B] the oldest position the ring buffers hold (events before it are unknown)."""
        B, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=1)
        rows = torch.arange(B, device=x.device)
        slot = positions % self.window
        k_ring[rows, :, slot] = k.view(B, self.n_heads, self.head_dim)
        v_ring[rows, :, slot] = v.view(B, self.n_heads, self.head_dim)
        dist = window_distances(positions, self.window)  # [B,W]
        allowed = dist <= (positions - starts)[:, None]  # slots not yet written / before start
        q = q.view(B, self.n_heads, 1, self.head_dim)
        att = (q @ k_ring.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))  # [B,H,1,W]
        att = att + self.rel_bias[:, dist].permute(1, 0, 2).unsqueeze(2)
        att = att.masked_fill(~allowed[:, None, None, :], float("-inf"))
        att = F.softmax(att, dim=-1)
        y = (att @ v_ring).view(B, C)
        return self.c_proj(y)

    def extend(
        self,
        x: Tensor,
        k_ring: Tensor,
        v_ring: Tensor,
        last: Tensor,
        n_new: Tensor,
        starts: Tensor,
    ) -> Tensor:
        """Several new events per user in one pass (``step`` for a chunk). x [B,K,C] holds each
        user's n_new [B] (1..W) new events right-aligned (left padding before them); last [B] is
        the position of each user's newest event. The new events attend to the ring (the W
        positions before them) and to one another, causally; their keys/values then go into the
        ring IN PLACE. Padding rows of the output are junk."""
        B, K, C = x.shape
        H, hd, W = self.n_heads, self.head_dim, self.window
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, K, H, hd).transpose(1, 2) for t in (q, k, v))  # [B,H,K,hd]
        j = torch.arange(K, device=x.device)
        pos_new = last[:, None] - (K - 1 - j)[None, :]  # [B,K]
        new_valid = j[None, :] >= (K - n_new)[:, None]
        old_last = last - n_new
        pos_ring = old_last[:, None] - window_distances(old_last, W)  # [B,W]
        ring_valid = pos_ring >= starts[:, None]
        pos_all = torch.cat([pos_ring, pos_new], dim=1)  # [B,W+K]
        key_valid = torch.cat([ring_valid, new_valid], dim=1)
        dist = pos_new[:, :, None] - pos_all[:, None, :]  # [B,K,W+K]
        allowed = key_valid[:, None, :] & (dist >= 0) & (dist < W)
        # a padding query attends to itself only, so its row has no -inf-only softmax
        own = torch.zeros_like(allowed)
        own[:, j, W + j] = True
        allowed = allowed | (own & ~new_valid[:, :, None])
        keys = torch.cat([k_ring, k], dim=2)
        values = torch.cat([v_ring, v], dim=2)
        att = (q @ keys.transpose(-2, -1)) * (1.0 / math.sqrt(hd))  # [B,H,K,W+K]
        att = att + self.rel_bias[:, dist.clamp(0, W - 1)].permute(1, 0, 2, 3)
        att = att.masked_fill(~allowed[:, None], float("-inf"))
        y = (F.softmax(att, dim=-1) @ values).transpose(1, 2).reshape(B, K, C)
        b_idx, j_idx = new_valid.nonzero(as_tuple=True)
        slots = pos_new[b_idx, j_idx] % W  # distinct per user: n_new <= W
        k_ring[b_idx, :, slots] = k[b_idx, :, j_idx]
        v_ring[b_idx, :, slots] = v[b_idx, :, j_idx]
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(cfg.d_model, cfg.ffn_mult * cfg.d_model)
        self.c_proj = nn.Linear(cfg.ffn_mult * cfg.d_model, cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.d_model)
        self.mlp = MLP(cfg)

    def forward(self, x: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        a, k, v = self.attn(self.ln_1(x), valid)
        x = x + a
        return x + self.mlp(self.ln_2(x)), k, v

    def tail(self, x: Tensor, valid: Tensor, n_out: int) -> tuple[Tensor, Tensor, Tensor]:
        """``forward`` for the last ``n_out`` positions (``CausalSelfAttention.tail``)."""
        a, k, v = self.attn.tail(self.ln_1(x), valid, n_out)
        x = x[:, x.shape[1] - n_out :] + a
        return x + self.mlp(self.ln_2(x)), k, v

    def step(
        self, x: Tensor, k_ring: Tensor, v_ring: Tensor, positions: Tensor, starts: Tensor
    ) -> Tensor:
        x = x + self.attn.step(self.ln_1(x), k_ring, v_ring, positions, starts)
        return x + self.mlp(self.ln_2(x))

    def extend(
        self,
        x: Tensor,
        k_ring: Tensor,
        v_ring: Tensor,
        last: Tensor,
        n_new: Tensor,
        starts: Tensor,
    ) -> Tensor:
        x = x + self.attn.extend(self.ln_1(x), k_ring, v_ring, last, n_new, starts)
        return x + self.mlp(self.ln_2(x))


class UserTower(nn.Module):
    """Causal sliding-window transformer over a user's events; pre-LN blocks, final LayerNorm.

    Per-user incremental state ("ring") is a tensor [L, 2, H, W, hd]: for each layer the keys (0)
    and values (1) of the last W events, the event at position p in slot p % W.
    """

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.type_emb = nn.Embedding(cfg.n_event_types, cfg.d_model)
        self.gap_emb = nn.Embedding(cfg.n_gap_buckets, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layers)])
        self.ln_f = nn.LayerNorm(cfg.d_model)

    def embed(self, item_vecs: Tensor, types: Tensor, gap_buckets: Tensor) -> Tensor:
        return item_vecs + self.type_emb(types) + self.gap_emb(gap_buckets)

    def forward(
        self, item_vecs: Tensor, types: Tensor, gap_buckets: Tensor, valid: Tensor
    ) -> Tensor:
        """item_vecs [B,T,d], types/gap_buckets [B,T], valid [B,T] bool (left padding: False
        marks padding before a user's first event) -> [B,T,d]. Outputs at padding are junk."""
        return self.forward_kv(item_vecs, types, gap_buckets, valid)[0]

    def forward_kv(
        self, item_vecs: Tensor, types: Tensor, gap_buckets: Tensor, valid: Tensor
    ) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        """``forward`` that also returns every layer's keys and values [B,H,T,hd]."""
        x = self.drop(self.embed(item_vecs, types, gap_buckets))
        kvs = []
        for block in self.blocks:
            x, k, v = block(x, valid)
            kvs.append((k, v))
        return self.ln_f(x), kvs

    def prefill(
        self,
        item_vecs: Tensor,
        types: Tensor,
        gap_buckets: Tensor,
        valid: Tensor,
        last_positions: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """Rebuild users from their recent events (left-padded, ending with each user's latest
        event whose whole-history position is ``last_positions`` [B]).

        Returns the latest event's output [B,d] and the ring state [B,L,2,H,W,hd]. With at least
        ``context_events`` recent events (or the whole history) both are exact: the keys and values
        of the last W events at every layer depend on no older event.
        """
        cfg = self.cfg
        B, W, L = types.shape[0], cfg.window, cfg.n_layers
        back = window_distances(last_positions, W)  # [B,W] events back per slot
        # Slots without a given event are masked in ``step`` (via starts); zero them anyway so
        # padding junk can never reach att @ v (0 * NaN would still be NaN).
        filled = back < valid.sum(dim=1, keepdim=True)
        keep = filled[:, None, :, None]
        # Only what the state needs is computed (``forward_kv`` is the whole pass, the reference
        # a test holds this to): layer l's outputs at the last (L-1-l)(W-1)+1 positions, the
        # next layer's ring and the W-1 events before each of its own outputs; the top layer's
        # at the last position alone. At two layers of W=50 that is 51 positions, not 198.
        x = self.embed(item_vecs, types, gap_buckets)[:, -cfg.context_events :]
        valid = valid[:, -cfg.context_events :]
        rings = []
        for layer, block in enumerate(cast(Sequence[Block], self.blocks)):
            T = x.shape[1]
            x, k, v = block.tail(x, valid, min(T, (L - 1 - layer) * (W - 1) + 1))
            index = (T - 1 - back).clamp(min=0)[:, None, :, None]
            index = index.expand(B, cfg.n_heads, W, cfg.head_dim)
            k_ring = torch.where(keep, k.gather(2, index), 0.0)
            v_ring = torch.where(keep, v.gather(2, index), 0.0)
            rings.append(torch.stack([k_ring, v_ring], dim=1))  # [B,2,H,W,hd]
            valid = valid[:, T - x.shape[1] :]
        return self.ln_f(x[:, -1]), torch.stack(rings, dim=1)

    def step(self, tokens: Tensor, rings: Tensor, positions: Tensor, starts: Tensor) -> Tensor:
        """Advance B users by one event each. tokens [B,d] from ``embed``; rings [B,L,2,H,W,hd]
        updated in place; positions [B] of the new events; starts [B] oldest positions the rings
        hold. Returns [B,d], equal (up to float rounding) to the full forward's last position."""
        x = tokens
        for layer, block in enumerate(cast(Sequence[Block], self.blocks)):
            x = block.step(x, rings[:, layer, 0], rings[:, layer, 1], positions, starts)
        return self.ln_f(x)

    def extend(
        self, tokens: Tensor, rings: Tensor, last: Tensor, n_new: Tensor, starts: Tensor
    ) -> Tensor:
        """Advance B users by n_new [B] (1..W) events each in one pass: tokens [B,K,d] from
        ``embed``, each user's new events right-aligned; last [B] the newest one's position.
        Returns [B,K,d] (padding rows junk), equal (up to float rounding) to ``step`` applied to
        the events one by one."""
        x = tokens
        for layer, block in enumerate(cast(Sequence[Block], self.blocks)):
            x = block.extend(x, rings[:, layer, 0], rings[:, layer, 1], last, n_new, starts)
        return self.ln_f(x)


# --------------------------------------------------------------------------------------------
# The model


class StreamRecModel(nn.Module):
    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.item_tower = ItemTower(cfg)
        self.user_tower = UserTower(cfg)
        self.apply(self._init_weights)
        # GPT-2: scale residual projections so the residual stream does not grow with depth
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layers))
        with torch.no_grad():
            self.item_tower.id_emb.weight[0].zero_()

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def item_vectors(self, features: ItemFeatures) -> Tensor:
        return self.item_tower(features)

    @staticmethod
    def score(user_vecs: Tensor, item_vecs: Tensor) -> Tensor:
        """[B,d] x [N,d] -> [B,N] inner products."""
        return user_vecs @ item_vecs.T

    def encode_full(
        self,
        rows: Sequence[int] | Tensor,
        types: Sequence[int] | Tensor,
        gaps: Sequence[float] | Tensor,
        item_vecs: Tensor,
    ) -> Tensor:
        """Reference: a plain full forward over a user's ENTIRE history (any length), in eval
        mode, returning the last event's vector [d]. ``rows`` index ``item_vecs`` [N,d]."""
        rows_t = torch.as_tensor(rows, dtype=torch.long).view(1, -1)
        types_t = torch.as_tensor(types, dtype=torch.long).view(1, -1)
        gaps_t = torch.as_tensor(gaps, dtype=torch.float64).view(1, -1)
        if rows_t.shape[1] == 0 or not rows_t.shape == types_t.shape == gaps_t.shape:
            raise ValueError("rows, types and gaps must be non-empty and of equal length")
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                out = self.user_tower(
                    item_vecs[rows_t],
                    types_t,
                    gap_bucket(gaps_t, self.cfg.n_gap_buckets),
                    torch.ones_like(rows_t, dtype=torch.bool),
                )
        finally:
            self.train(was_training)
        return out[0, -1]
