"""DP-SGD for the two-tower model: per-user clipped gradients plus Gaussian noise, accounted with
Opacus's RDP accountant (``streamrec train --dp-epsilon E``).

Why not ``opacus.PrivacyEngine``: its per-sample gradients come from layer hooks that take the
first dimension of every layer's input as the sample, and the item tower's input is the catalog
(one row per item, shared by every sample of a step), so its per-sample gradients would be
per-item ones. Wrapping the model fails first on the model's own parameters (the attention's
relative-position bias), which no Opacus grad sampler knows. Here each sample's gradient is taken
whole with ``torch.func`` (``vmap`` over ``grad`` of one sample's loss), the item tower included:
exact per-sample gradients of any module, at several times the cost of a plain step.

The privacy unit is the user: each user contributes one training chunk (their most recent
``max_seq_len`` positions with the context before them), steps draw users by Poisson sampling at
rate ``batch_size / users``, and each user's gradient is clipped to ``clip_norm`` before the sum.
The noise multiplier is the smallest that keeps the planned steps within (ε, δ); stopping early
spends less, and the ε actually spent is what the checkpoint records. Not covered by the
guarantee: the choice of the best epoch on the validation users' held-out events, and the item
features and vocabulary (public catalog data here).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap


@dataclass(frozen=True)
class DPConfig:
    epsilon: float
    delta: float
    clip_norm: float = 1.0


def default_delta(n_users: int) -> float:
    """δ well below 1/users (the chance of a total leak must be smaller than one user's share)."""
    return min(1e-5, 1.0 / (10 * max(1, n_users)))


def noise_multiplier(cfg: DPConfig, sample_rate: float, steps: int) -> float:
    """The smallest σ for which ``steps`` Poisson-sampled steps at ``sample_rate`` spend at most
    ``cfg.epsilon`` (RDP accountant)."""
    from opacus.accountants.utils import get_noise_multiplier

    return float(
        get_noise_multiplier(
            target_epsilon=cfg.epsilon,
            target_delta=cfg.delta,
            sample_rate=sample_rate,
            steps=steps,
            accountant="rdp",
        )
    )


class PrivateSteps:
    """Per-sample clipping, noise and accounting for one training run."""

    def __init__(
        self, model: nn.Module, cfg: DPConfig, sample_rate: float, steps: int, seed: int
    ) -> None:
        from opacus.accountants import RDPAccountant

        self.model, self.cfg, self.sample_rate = model, cfg, sample_rate
        self.sigma = noise_multiplier(cfg, sample_rate, steps)
        self.accountant = RDPAccountant()
        self.steps = 0
        self.noise = torch.Generator().manual_seed(seed + 7919)

    def sample(self, n: int, gen: torch.Generator) -> list[int]:
        """Poisson sampling: each user in this step with probability ``sample_rate``."""
        return torch.nonzero(torch.rand(n, generator=gen) < self.sample_rate).flatten().tolist()

    def per_sample_grads(
        self, loss: SampleLoss, batched: tuple[Tensor, ...]
    ) -> tuple[dict[str, Tensor], Tensor]:
        """Each sample's gradient [B, *param] of its loss (``loss(*sample)`` returns the loss and
        a detached copy), by the model's parameter names, and the losses [B]."""
        params = {k: p.detach() for k, p in loss.named_parameters() if p.requires_grad}
        buffers = dict(loss.named_buffers())

        def one(p: dict[str, Tensor], b: dict[str, Tensor], *sample: Tensor) -> Any:
            return functional_call(loss, (p, b), sample)

        in_dims = (None, None, *([0] * len(batched)))
        grads, losses = vmap(grad(one, has_aux=True), in_dims=in_dims, randomness="different")(
            params, buffers, *batched
        )
        return {k.removeprefix("m."): g for k, g in grads.items()}, losses

    def clipped_sum(self, grads: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Sum over samples of each sample's gradient scaled to norm at most ``clip_norm``."""
        norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads.values()]).norm(dim=0)
        scale = (self.cfg.clip_norm / (norms + 1e-6)).clamp(max=1.0)
        return {k: torch.einsum("b,b...->...", scale, g) for k, g in grads.items()}

    def apply(self, summed: Mapping[str, Tensor], n_users: int) -> None:
        """Noise the clipped sum, average over the expected batch, and set it as the gradient."""
        expected = self.sample_rate * n_users
        std = self.sigma * self.cfg.clip_norm
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            g = summed.get(name)
            if g is None:
                g = torch.zeros_like(p)
            noise = torch.normal(0.0, std, size=p.shape, generator=self.noise)
            p.grad = (g + noise) / expected
        self.accountant.step(noise_multiplier=self.sigma, sample_rate=self.sample_rate)
        self.steps += 1

    def spent(self) -> float:
        return float(self.accountant.get_epsilon(self.cfg.delta)) if self.steps else 0.0

    def metadata(self) -> dict[str, Any]:
        return {
            "epsilon_target": self.cfg.epsilon,
            "epsilon_spent": round(self.spent(), 4),
            "delta": self.cfg.delta,
            "clip_norm": self.cfg.clip_norm,
            "noise_multiplier": round(self.sigma, 6),
            "sample_rate": self.sample_rate,
            "steps": self.steps,
            "unit": "user (one chunk each, Poisson-sampled)",
            "accountant": "rdp (opacus)",
        }


class SampleLoss(nn.Module):
    """One sample's loss as a module over ``model`` (so ``torch.func.functional_call`` can swap
    in the parameters): ``body(*sample, *shared)`` uses ``model`` as usual."""

    def __init__(self, model: nn.Module, body: Callable[..., tuple[Tensor, Tensor]]) -> None:
        super().__init__()
        self.m = model
        self.body = body

    def forward(self, *args: Any) -> tuple[Tensor, Tensor]:
        return self.body(*args)
