"""GKD (generative feature distillation; docs/methods.md, method A) in one public module:
everything a training loop needs to run the method on its own networks.

* :class:`GenerativeAttentionHead` (lambda (N, C, T) from F (N, C, T, H, W); its tail
  :func:`attention_head_tail` in exact compact form) and :func:`attention_apply`
  (F_fg = F * lambda * sum(F) / sum(F * lambda)): the fused ops of docs/ops.md 3b;
* :class:`ConditionalVAE`, which generates F from lambda, and the losses
  :func:`cvae_loss`, :func:`generative_distillation_loss` (L_GD),
  :func:`attention_distillation_loss` (L_AD); :func:`group_count` for GroupNorm widths.

Layout: the fused ops live in gkd/head/ and gkd/apply/ (each with reference, layout,
native, triton_kernels, op, module, like every op), the CVAE in gkd/cvae.py, the losses
in gkd/losses.py. The reference trainer's ``GKDNet`` (vkd_kernels/train/models/gkd_net.py)
is built from these. ``vkd_kernels.methods.gkd`` is a former name of the CVAE part (an alias).

Each network (teacher and student) carries, on its last feature stage F (N, C, T, H, W),
an attention head giving lambda (N, C, T) and a :class:`ConditionalVAE`:

    encoder   h  = ReLU(GN(Conv3d(F; C -> C, kernel (1, H, W))))           (N, C, T)
              [mu, log s2] = MLP_{2C -> C -> C -> 2C}([h, lambda])          per time step
    sample    z  = mu + e * exp(log s2 / 2),  e ~ N(0, I)
    decoder   F_hat = ReLU(GN(ConvTranspose3d(MLP_{2C -> C -> C -> C}([z, lambda]); (1, H, W))))
    prior     p(z | lambda) = N(lambda, I): at inference z = e + lambda

    L_cvae = mean((F - F_hat)^2) + kl_weight * mean(-0.5 (1 + log s2 - (mu - lambda)^2 - s2))

The losses of the distillation, all plain means so they are independent of the shapes:
L_GD (generative distillation) = mean((F_hat_s - F_hat_t)^2) with both CVAEs fed the
student's (F_s, lambda_s); L_AD (attention distillation) = mean((lambda_s - lambda_t)^2);
L_rec = mean((Dec(e + lambda, lambda) - F)^2).

Departures from the published code, on purpose: group-norm group counts are the largest
divisor of C that is <= gn_groups (the code hard-codes 32, which fails for C not a multiple
of 32). The MLPs put a ReLU between layers and none after the last, so mu, log s2 and
the decoder's pre-activation are unconstrained (our reading of docs/methods.md).
"""
from .apply import AttentionApply, attention_apply
from .cvae import ConditionalVAE, group_count
from .head import GenerativeAttentionHead, attention_head_tail
from .losses import attention_distillation_loss, cvae_loss, generative_distillation_loss

__all__ = ["GenerativeAttentionHead", "attention_head_tail", "attention_apply", "AttentionApply", "ConditionalVAE",
           "cvae_loss", "generative_distillation_loss", "attention_distillation_loss", "group_count"]
