"""Quickstart: one discriminator/segmenter step and one generator step with scatloss.

Run: ``python examples/quickstart.py``. Tiny stand-in networks, random data; the README shows the
same lines. For a real training run see ``examples/aotgan``.
"""

from __future__ import annotations

import torch
from torch import nn

import scatloss
import scatloss.functional as SF


def main(steps: int = 3, seed: int = 0) -> dict[str, float]:
    torch.manual_seed(seed)
    B, H, W = 4, 32, 32
    G = nn.Sequential(nn.Conv2d(4, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 3, 3, padding=1), nn.Tanh())
    S = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(16, 1, 3, padding=1))
    D = nn.Sequential(nn.Conv2d(3, 16, 4, 2, 1), nn.LeakyReLU(0.2), nn.Flatten(), nn.LazyLinear(1))
    D(torch.zeros(1, 3, H, W))  # materialise the lazy layer
    opt_g = torch.optim.Adam(G.parameters(), 1e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam([*D.parameters(), *S.parameters()], 4e-4, betas=(0.5, 0.999))
    objective = scatloss.InpaintingObjective()  # paper weights: adv 1, text 10, sem 1, rec 10
    log: dict[str, float] = {}
    for _ in range(steps):
        image = torch.rand(B, 3, H, W) * 2 - 1  # ground truth in [-1, 1]
        hole = torch.zeros(B, 1, H, W)
        hole[:, :, 8:24, 8:24] = 1.0  # 1 = missing
        corrupted = SF.corrupt(image, hole)  # holes filled with 1.0
        prediction = G(torch.cat([corrupted, hole], dim=1))
        comp = SF.composite(prediction, image, hole)
        # discriminator + segmenter step (Eq. 6 and Eq. 1)
        d_terms = objective.discriminator_loss(
            hole,
            fake_logits=D(comp.detach()),
            real_logits=D(image),
            fake_pixel_logits=S(comp.detach()),
            real_pixel_logits=S(image),
        )
        opt_d.zero_grad()
        d_terms["total"].backward()
        opt_d.step()
        # generator step (Eq. 8 without the contrastive terms; see SCATCriterion for all of them)
        g_terms = objective(prediction, image, hole, fake_logits=D(comp), fake_pixel_logits=S(comp))
        opt_g.zero_grad()
        g_terms["total"].backward()
        opt_g.step()
        log = {f"g/{k}": v.item() for k, v in g_terms.items()}
        log |= {f"d/{k}": v.item() for k, v in d_terms.items()}
    return log


if __name__ == "__main__":
    for name, value in main().items():
        print(f"{name:10s} {value:.4f}")
