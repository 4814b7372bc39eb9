"""GKD's conditional VAE and losses (docs/methods.md, method A)."""
import pytest
import torch

from vkd_kernels.methods.gkd import (
    ConditionalVAE,
    attention_distillation_loss,
    cvae_loss,
    generative_distillation_loss,
    group_count,
)


def test_group_count_is_the_largest_divisor_up_to_the_request():
    assert group_count(1024, 32) == 32
    assert group_count(48, 32) == 24
    assert group_count(7, 32) == 7
    assert group_count(13, 4) == 1
    with pytest.raises(ValueError, match="gn_groups"):
        group_count(8, 0)


@pytest.mark.parametrize("shape", [(2, 16, 4, 3, 3), (1, 6, 7, 5, 2)])
def test_shapes_and_prior_sampling(shape):
    N, C, T, H, W = shape
    cvae = ConditionalVAE(C, (H, W), gn_groups=4)
    feature, lam = torch.randn(shape), torch.rand(N, C, T)
    reconstruction, mu, logvar = cvae(feature, lam)
    assert reconstruction.shape == shape and mu.shape == logvar.shape == (N, C, T)
    assert (reconstruction >= 0).all()  # ends in ReLU
    assert cvae.generate(lam).shape == shape
    noise = torch.randn(N, C, T)
    assert torch.equal(cvae.generate(lam, noise), cvae.decode(noise + lam, lam))


def test_samples_are_independent_per_time_step():
    """The encoder MLP acts per time step: changing frame t of lambda changes mu at t only."""
    cvae = ConditionalVAE(8, (2, 2), gn_groups=2)
    feature, lam = torch.randn(1, 8, 5, 2, 2), torch.rand(1, 8, 5)
    mu, _ = cvae.encode(feature, lam)
    lam2 = lam.clone()
    lam2[..., 3] += 1
    mu2, _ = cvae.encode(feature, lam2)
    changed = (mu2 - mu).abs().amax(1)[0] > 0
    assert changed.tolist() == [False, False, False, True, False]


def test_cvae_loss_formula():
    feature, reconstruction = torch.randn(2, 4, 3, 2, 2), torch.randn(2, 4, 3, 2, 2)
    mu, logvar, lam = torch.randn(2, 4, 3), torch.randn(2, 4, 3), torch.rand(2, 4, 3)
    kl = (0.5 * ((mu - lam) ** 2 + logvar.exp() - 1 - logvar)).mean()
    expected = ((feature - reconstruction) ** 2).mean() + 0.3 * kl
    assert torch.allclose(cvae_loss(feature, reconstruction, mu, logvar, lam, kl_weight=0.3), expected)
    # the KL term vanishes exactly at the prior N(lambda, I)
    assert cvae_loss(feature, feature, lam, torch.zeros_like(lam), lam) == 0


def test_cvae_learns_to_reconstruct():
    torch.manual_seed(0)
    cvae = ConditionalVAE(8, (3, 3), gn_groups=2)
    feature = torch.relu(torch.randn(4, 8, 4, 3, 3))
    lam = torch.rand(4, 8, 4)
    optimizer = torch.optim.Adam(cvae.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        reconstruction, mu, logvar = cvae(feature, lam)
        loss = cvae_loss(feature, reconstruction, mu, logvar, lam)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_distillation_losses():
    a, b = torch.randn(2, 4, 3, 2, 2), torch.randn(2, 4, 3, 2, 2)
    assert torch.allclose(generative_distillation_loss(a, b), ((a - b) ** 2).mean())
    lam_s, lam_t = torch.rand(2, 4, 3), torch.rand(2, 4, 3)
    assert torch.allclose(attention_distillation_loss(lam_s, lam_t), ((lam_s - lam_t) ** 2).mean())
    with pytest.raises(ValueError, match="lam_teacher has shape"):
        attention_distillation_loss(lam_s, torch.rand(2, 5, 3))


BAD = [
    (lambda: ConditionalVAE(0, (2, 2)), "channels must be"),
    (lambda: ConditionalVAE(4, (2, 0)), "spatial_size must be"),
    (lambda: ConditionalVAE(4, (2, 2))(torch.randn(1, 4, 3, 2, 3), torch.rand(1, 4, 3)), "feature must have shape"),
    (lambda: ConditionalVAE(4, (2, 2))(torch.randn(1, 4, 3, 2, 2), torch.rand(1, 5, 3)), "lam must be"),
]


@pytest.mark.parametrize("case", range(len(BAD)))
def test_bad_input(case):
    call, message = BAD[case]
    with pytest.raises(ValueError, match=message):
        call()
