"""The released formulations of f-CLSWGAN's and TF-VAEGAN's training iterations, in plain PyTorch
(docs/clswgan.md, docs/tfvaegan.md): the critic's loss as separate backward passes (the real term
with −1, the fake term with +1, the gradient penalty through autograd's double backward),
``torch.optim.Adam`` without fused kernels, the generator's terms as the released loops add them.
A test oracle for ``zslfast.models.clswgan`` / ``zslfast.nn.vaegan.train_step`` and the baseline of
``benchmarks/bench_train.py --method clswgan|tfvaegan``. Not shipped in the package.

Both take the same draws as zslfast's steps, in the same order, from one generator ``g``: per critic
batch the noise and then the penalty's mixing weights; then the generator's noise."""
import torch
import torch.nn.functional as F


def _gradient_penalty(D, x, fake, a, g):
    u = torch.rand(x.shape[0], 1, generator=g, device=x.device, dtype=x.dtype)
    mixed = (u * x + (1 - u) * fake).requires_grad_(True)
    out = D(mixed, a)
    (grad,) = torch.autograd.grad(out, mixed, torch.ones_like(out), create_graph=True)
    return ((grad.norm(2, dim=1) - 1) ** 2).mean()


def adam(params, lr, beta1):
    return torch.optim.Adam(params, lr=lr, betas=(beta1, 0.999), foreach=False)


def clswgan_iteration(G, D, clf, opt_g, opt_d, x_all, y_all, y_seen, att, batches, q, g):
    """One f-CLSWGAN iteration: a critic step on each batch, then the generator step on the last
    batch's attributes and labels (``y_seen``: positions among the seen classes) with fresh noise."""
    for idx in batches:
        x, a = x_all[idx], att[y_all[idx]]
        for p in D.parameters():
            p.requires_grad_(True)
        D.zero_grad()
        real = D(x, a).mean()
        real.backward(torch.tensor(-1.0, dtype=x.dtype, device=x.device))
        z = torch.randn(x.shape[0], att.shape[1], generator=g, device=x.device, dtype=x.dtype)
        fake = G(z, a).detach()
        fake_score = D(fake, a).mean()
        fake_score.backward(torch.tensor(1.0, dtype=x.dtype, device=x.device))
        gp = _gradient_penalty(D, x, fake, a, g) * q["lambda_gp"]
        gp.backward()
        opt_d.step()
        critic = (fake_score - real + gp).detach()
    for p in D.parameters():
        p.requires_grad_(False)
    G.zero_grad()
    z = torch.randn(idx.numel(), att.shape[1], generator=g, device=att.device, dtype=att.dtype)
    fake = G(z, a)
    cls = F.nll_loss(F.log_softmax(clf(fake), dim=1), y_seen[idx])
    loss = -D(fake, a).mean() + q["cls_weight"] * cls
    loss.backward()
    opt_g.step()
    return {"critic": critic, "generator": loss.detach(), "cls": cls.detach()}


def tfvaegan_optimizers(gan, q):
    """The released Adam optimisers (E with default betas, the others with β1)."""
    return {"E": torch.optim.Adam(gan.E.parameters(), lr=q["lr"], foreach=False),
            "G": adam(gan.G.parameters(), q["lr"], q["beta1"]), "D": adam(gan.D.parameters(), q["lr"], q["beta1"]),
            "Dec": adam(gan.Dec.parameters(), q["dec_lr"], q["beta1"]),
            "Fb": adam(gan.Fb.parameters(), q["feed_lr"], q["beta1"])}


def _weighted_l1(pred, target):
    d = pred - target
    w = d.pow(2)
    w = w / w.sum(1).sqrt().unsqueeze(1)
    return (w * d.abs()).sum() / d.shape[0]


def _feedback_fake(gan, z, a, w, source=None):
    fake = gan.G(z, a)
    if not w:
        return fake
    hidden = gan.Dec(fake if source is None else source)[1].detach()
    return gan.G(z, a, gan.Fb(hidden), w)


def tfvaegan_iteration(gan, opts, x_all, y_all, att, batches, loop, q, g, lam):
    """One TF-VAEGAN iteration (pass ``loop``) as released: per batch a decoder step and a critic
    step, then the generator step on the last batch again. Returns (losses, the new λ)."""
    w = q["a1"] if loop == 1 else 0.0
    gps = []
    for idx in batches:
        x, a = x_all[idx], att[y_all[idx]]
        for net in (gan.D, gan.Dec):
            for p in net.parameters():
                p.requires_grad_(True)
        gan.Dec.zero_grad()
        (q["recons_weight"] * _weighted_l1(gan.Dec(x)[0], a)).backward()
        opts["Dec"].step()
        gan.D.zero_grad()
        real = q["gamma_d"] * gan.D(x, a).mean()
        real.backward(torch.tensor(-1.0, dtype=x.dtype, device=x.device))
        eps = torch.randn(x.shape[0], att.shape[1], generator=g, device=x.device, dtype=x.dtype)
        with torch.no_grad():
            if q["encoded_noise"]:
                mu, logvar = gan.E(x, a)
                z = eps * torch.exp(0.5 * logvar) + mu
            else:
                z = eps
            fake = _feedback_fake(gan, z, a, w)
        fake_score = q["gamma_d"] * gan.D(fake, a).mean()
        fake_score.backward(torch.tensor(1.0, dtype=x.dtype, device=x.device))
        raw = _gradient_penalty(gan.D, x, fake, a, g)
        (q["gamma_d"] * lam * raw).backward()
        gps.append(float(raw.detach()))
        opts["D"].step()
        critic = (fake_score - real + q["gamma_d"] * lam * raw).detach()
    mean_gp = sum(gps) / len(gps)
    lam = lam * 1.1 if mean_gp > 1.05 else lam / 1.1 if mean_gp < 1.001 else lam
    for p in gan.D.parameters():
        p.requires_grad_(False)
    if q["recons_weight"] > 0 and q["freeze_dec"]:
        for p in gan.Dec.parameters():
            p.requires_grad_(False)
    for net in (gan.E, gan.G, gan.Fb, gan.Dec):
        net.zero_grad()
    mu, logvar = gan.E(x, a)
    eps = torch.randn(x.shape[0], att.shape[1], generator=g, device=x.device, dtype=x.dtype)
    recon = _feedback_fake(gan, eps * torch.exp(0.5 * logvar) + mu, a, w)
    bce = F.binary_cross_entropy(recon + 1e-12, x.detach(), reduction="sum") / x.shape[0]
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / x.shape[0]
    vae = bce + kl
    if q["encoded_noise"]:
        fake = recon
    else:
        noise = torch.randn(x.shape[0], att.shape[1], generator=g, device=x.device, dtype=x.dtype)
        fake = _feedback_fake(gan, noise, a, w, source=recon)
    loss = vae - q["gamma_g"] * gan.D(fake, a).mean() + q["recons_weight"] * _weighted_l1(gan.Dec(fake)[0], a)
    loss.backward()
    for name in ["E", "G"] + (["Fb"] if loop == 1 else []) + (["Dec"] if q["recons_weight"] > 0 and not q["freeze_dec"] else []):
        opts[name].step()
    for net in (gan.D, gan.Dec):
        for p in net.parameters():
            p.requires_grad_(True)
    return {"critic": critic, "generator": loss.detach(), "vae": vae.detach()}, lam
