"""GKD's losses: the CVAE's own objective, L_GD and L_AD (plain means, so they do not
depend on the shapes)."""
from __future__ import annotations

import torch
from torch.nn import functional as F


def cvae_loss(feature: torch.Tensor, reconstruction: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
              lam: torch.Tensor, kl_weight: float = 0.1) -> torch.Tensor:
    """mean((F - F_hat)^2) + kl_weight * mean(KL(N(mu, s2) || N(lambda, I)))."""
    kl = -0.5 * (1 + logvar - (mu - lam) ** 2 - logvar.exp())
    return F.mse_loss(reconstruction, feature) + kl_weight * kl.mean()


def generative_distillation_loss(generated_student: torch.Tensor, generated_teacher: torch.Tensor) -> torch.Tensor:
    """L_GD = mean((F_hat_s - F_hat_t)^2); both generated from the student's (F_s, lambda_s)."""
    return F.mse_loss(generated_student, generated_teacher)


def attention_distillation_loss(lam_student: torch.Tensor, lam_teacher: torch.Tensor) -> torch.Tensor:
    """L_AD = mean((lambda_s - lambda_t)^2)."""
    if lam_student.shape != lam_teacher.shape:
        raise ValueError(f"lam_teacher has shape {tuple(lam_teacher.shape)} but lam_student has shape "
                         f"{tuple(lam_student.shape)}; give the student an adapter to the teacher's width")
    return F.mse_loss(lam_student, lam_teacher)
