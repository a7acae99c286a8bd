"""f-CLSWGAN: "Feature Generating Networks for Zero-Shot Learning" (Xian, Lorenz, Schiele, Akata,
CVPR 2018; reference note ``docs/clswgan.md``).

A conditional WGAN-GP on feature vectors (min-max scaled, statistics from trainval) with a
classification loss: a softmax classifier on the seen classes is trained first and frozen; the
generator G(z, a) (ReLU output) then minimises −D(G(z, a), a) plus ``cls_weight`` × the frozen
classifier's cross-entropy of its features, against a critic D(x, a) trained ``critic_iters``
times per generator step with a gradient penalty of fixed weight ``lambda_gp``. Every batch is a
fresh uniform draw; the generator step reuses the last critic batch's attributes and labels, as
released. The final classifiers train on real seen plus synthetic unseen features (GZSL) and on
synthetic unseen features (ZSL, U outputs).
"""
import torch
import torch.nn.functional as F

from zslfast.config.settings import (GENERATIVE_CHECKS, Float, Int, Names, Section, Width, expand_names, generative_settings,
                                     names_settings)
from zslfast.engine.generative import GenerativeMethod
from zslfast.engine.recipe import Stage
from zslfast.engine.samplers import CriticGroups, RandomBatches, ShuffledBatches
from zslfast.eval.classifier import SoftmaxClassifier
from zslfast.eval.generative import conditional_synthesizer
from zslfast.nn.vaegan import Critic, Generator, gradient_penalty
from zslfast.optim import adam

SETTINGS = Section(
    extends=("features", "attributes", "epochs", "batches", "evaluation", "validation"),
    gan=Section(hidden=Width(), critic_iters=Int(min=1), lr=Float(min=0, min_open=True),
                beta1=Float(min=0, max=1, max_open=True), lambda_gp=Float(min=0), cls_weight=Float(min=0)),
    pretrain=Section(lr=Float(min=0, min_open=True), epochs=Int(min=1), batch_size=Int(min=1)),
    **generative_settings(),
    not_released=Names(),
    checks=[*GENERATIVE_CHECKS(), names_settings("not_released", allow_all=True)],
)

# Settings of this implementation, not of the released scripts: never "not released".
IMPLEMENTATION_SETTINGS = {"validation", "attributes", "synth_ratio", "calibration", "classifier.init",
                           "classifier.zsl_outputs", "not_released", "eval_start", "eval_every"}


def gan_step(x_all, y_all, y_seen, att, q, g):
    """One iteration as a manual step of (pass, batches) items (:class:`CriticGroups`): a critic step
    on each batch (WGAN-GP, Eq. 2), then a generator step (Eq. 4: the adversarial term and the frozen
    seen classifier's cross-entropy) on the last batch's attributes and labels with fresh noise.
    ``y_seen``: each training row's position among the seen classes (the classifier's outputs)."""

    def noise(n):
        return torch.randn(n, att.shape[1], generator=g, device=g.device, dtype=att.dtype)

    def step(item, nets, opt):
        _, batches = item
        for idx in batches:
            x, a = x_all[idx], att[y_all[idx]]
            with torch.no_grad():
                fake = nets.G(noise(x.shape[0]), a)
            gp = gradient_penalty(nets.D.module, x, fake, a, generator=g)  # per-row composite of D itself
            scores = nets.D(torch.cat([fake, x]), torch.cat([a, a]))  # one pass over fake and real rows
            loss_d = scores[:x.shape[0]].mean() - scores[x.shape[0]:].mean() + q["lambda_gp"] * gp
            opt.step(loss_d, "D")
        a = att[y_all[idx]]
        with opt.frozen("D"):
            fake = nets.G(noise(idx.numel()), a)
            cls = F.cross_entropy(nets.clf(fake), y_seen[idx])
            loss_g = -nets.D(fake, a).mean() + q["cls_weight"] * cls
            opt.step(loss_g, "G")
        return {"critic": loss_d.detach(), "generator": loss_g.detach(), "cls": cls.detach()}

    return step


class CLSWGAN(GenerativeMethod):
    name = "clswgan"
    settings = SETTINGS
    selected = "gan_epochs"
    test_cadence = (1, 1)     # the released code evaluates after every epoch
    independent = ("zsl",)    # its ZSL and GZSL results come from separate runs, each its own best

    def recipe(self, data, cfg, ctx, epochs):
        """The seen-class classifier (frozen afterwards), then the WGAN's epochs, selected."""
        q, p, device = cfg["gan"], cfg["pretrain"], ctx.device
        x, y = data.subset("trainval")
        seen = data.seen_classes.to(device)
        y_seen = torch.searchsorted(seen, y)
        att = data.attributes.to(device)
        with ctx.init_scope():
            clf = SoftmaxClassifier(data.feature_dim, seen.numel(), device=device, init="normal")
            G = Generator(data.feature_dim, data.attribute_dim, data.attribute_dim, q["hidden"], output="relu").to(device)
            D = Critic(data.feature_dim, data.attribute_dim, q["hidden"]).to(device)
        yield Stage("seen classifier", {"clf": clf}, adam(clf.parameters(), device, p["lr"], betas=(0.5, 0.999)),
                    ShuffledBatches(x.shape[0], p["batch_size"], ctx.rng("pretrain_batches", device), device),
                    loss=lambda idx, nets: F.cross_entropy(nets.clf(x[idx]), y_seen[idx]), epochs=p["epochs"],
                    then="freeze")
        batches = RandomBatches(x.shape[0], cfg["batch_size"], ctx.rng("gan_batches", device))
        passes = CriticGroups(batches, 1, -(-x.shape[0] // cfg["batch_size"]), q["critic_iters"])
        betas = (q["beta1"], 0.999)
        yield Stage("f-clswgan", {"G": G, "D": D}, {"G": adam(G.parameters(), device, q["lr"], betas=betas),
                                                   "D": adam(D.parameters(), device, q["lr"], betas=betas)},
                    passes, step=gan_step(x, y, y_seen, att, q, ctx.rng("gan_noise", device)), uses={"clf": clf},
                    epochs=epochs, selected=True, evaluates=G)
        return G

    def generation(self, model, data, config):
        """G(z, a) features; the classifiers read the features themselves."""
        return data, conditional_synthesizer(model, data.attributes.to(data.features.device)), None

    def generator_networks(self, model):
        return {"G": model}

    def test_synthesizer(self, networks, record, device):
        hidden, inputs = networks["G"]["fc1.weight"].shape  # inputs: [z, a]
        emb = record["classes"]["embeddings"]
        G = Generator(networks["G"]["fc2.weight"].shape[0], emb.shape[1], inputs - emb.shape[1], hidden, output="relu")
        G.load_state_dict(networks["G"])
        return conditional_synthesizer(G.to(device).eval(), emb.to(device, torch.get_default_dtype()))

    def finish(self, model, data, config, ctx):
        return {"not_released": expand_names(config, config["not_released"], IMPLEMENTATION_SETTINGS)}
