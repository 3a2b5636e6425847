"""Choosing k latents for a sparse SAE code, and how well k latents can express a direction.

A dense code v [d_sae] (trained without a cap) edits token t by Δh_t = (z'_t − z_t) · W_dec with
z'_t = relu(z_t + α·v) (`saesteer.steer.latent`). Three rules pick the support S, |S| = k:

    magnitude   the k largest |v_i|
    effect      the k largest e_i = ½ · mean_t (|relu(z_ti + v_i) − z_ti| + |relu(z_ti − v_i) − z_ti|)
                · ‖W_dec,i‖: how much latent i actually moves the residual, averaged over both
                directions (the code is trained for α = ±1). A large v_i on a latent that the
                edit cannot move (negative v_i on a latent that is never active) scores 0.
    omp         orthogonal matching pursuit of the mean edit Δ̄ = mean_t Δh_t (α = 1) over the
                decoder rows: k greedy picks i = argmax |⟨r, W_dec,i⟩| / ‖W_dec,i‖, each followed
                by a least-squares refit of Δ̄ on the rows picked so far, r = the residual.

`sparse_fit` is also the diagnostic of how far a k-latent code can follow a dense direction u:

    cos²(u, S) = 1 − ‖u − P_S u‖² / ‖u‖²          P_S: projection onto span{W_dec,i : i ∈ S}

with S from OMP (greedy: a lower bound on the best k-subset's cos²).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

DENSE_CODE_RULES = ("effect", "magnitude", "omp")  # rules that pick from a trained dense code


@dataclass(frozen=True)
class SparseFit:
    """S [k] (in pick order), least-squares coefficients [k] and cos² of the fit."""

    support: torch.Tensor
    coefficients: torch.Tensor
    cos2: float


def sparse_fit(direction: torch.Tensor, atoms: torch.Tensor, k: int) -> SparseFit:
    """OMP of `direction` [d] on `atoms` [n, d] (rows), k picks (module docstring)."""
    if not 1 <= k <= atoms.shape[0]:
        raise ValueError(f"k must be in 1..{atoms.shape[0]}, got {k}.")
    target = direction.double()
    atoms = atoms.double()
    unit = atoms / atoms.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    residual, picked = target.clone(), []
    coefficients = torch.zeros(0, dtype=torch.float64)
    for _ in range(k):
        scores = (unit @ residual).abs()
        if picked:
            scores[torch.tensor(picked)] = -1.0
        picked.append(int(scores.argmax()))
        basis = atoms[picked]  # [j, d]
        coefficients = torch.linalg.lstsq(basis.T, target[:, None]).solution[:, 0]
        residual = target - basis.T @ coefficients
    energy = float(target.pow(2).sum())
    cos2 = 1.0 - float(residual.pow(2).sum()) / energy if energy > 0 else 0.0
    return SparseFit(torch.tensor(picked), coefficients.to(direction.dtype), cos2)


def latent_effect(sae, h: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """e_i [d_sae] of the module docstring over the tokens h [N, d]."""
    with torch.no_grad():
        z = sae.encode(h)
        moved = (torch.relu(z + v) - z).abs() + (torch.relu(z - v) - z).abs()
        return 0.5 * moved.mean(0) * sae.W_dec.norm(dim=-1)


def mean_edit(sae, h: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Δ̄ [d] = mean_t (relu(z_t + v) − z_t) · W_dec over the tokens h [N, d]."""
    with torch.no_grad():
        z = sae.encode(h)
        return (torch.relu(z + v) - z).mean(0) @ sae.W_dec


def select_support(rule: str, k: int, sae, h: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Sorted indices [≤ k] of the latents `rule` keeps from the dense code v (module docstring).

    Only latents with v_i ≠ 0 are eligible, so the result can be shorter than k.
    """
    if rule not in DENSE_CODE_RULES:
        raise ValueError(f"support rule must be one of {DENSE_CODE_RULES}, got {rule!r}.")
    eligible = (v != 0).nonzero().squeeze(-1)
    k = min(k, int(eligible.numel()))
    if k == 0:
        return eligible
    if rule == "omp":
        picked = eligible[sparse_fit(mean_edit(sae, h, v), sae.W_dec[eligible], k).support]
    else:
        score = v.abs() if rule == "magnitude" else latent_effect(sae, h, v)
        picked = eligible[score[eligible].topk(k).indices]
    return picked.sort().values
