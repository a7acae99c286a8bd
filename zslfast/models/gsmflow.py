"""GSMFlow: "Mitigating Generation Shifts for Generalized Zero-Shot Learning" (Chen et al., ACM MM 2021).

A conditional affine-coupling flow (:class:`zslfast.nn.ConditionalFlow`) models visual features given
a "global semantic" condition from the relative-positioning module; unseen-class features are then
sampled from it and a softmax classifier is trained on real seen + synthetic unseen features
(reference note gsmflow.md; section numbers below refer to it).

Faithful to the MM'21 code: K GLOW blocks without permutations, clamp 1.0 with atan, all flow
parameters drawn from N(0, 0.01²), 2048-wide LeakyReLU(0.2) subnets, the condition fed to every
subnet (§2b); three-anchor relative positioning with anchors chosen by cosine-similarity row sums
(min, max, upper median) (§2d); visual perturbation x + π·ε on the flow's input at training time
(§2e); loss mean(z²)/2 − mean(logdet)/D plus λ·MSE(f⁻¹(0; sr(a_s)), μ_s) with sr under no_grad
(§2f); Adam with weight decay and StepLR per epoch; full batches (§3).

Conscious choices (§7): model selection on a class-disjoint validation split by default: the number
of flow epochs and each final classifier's number of epochs (GZSL and ZSL, each the best epoch on
the validation split's held-out data, as the original picks its best classifier epoch) are chosen
there, then everything is retrained on all of trainval with those counts (the original selects the
evaluation iteration and the classifier epoch on the test set: ``--select-on-test`` reproduces
that). The synthetic budget is ``synth_per_class`` features per unseen class (the MM'21 counts on
real data) or, when ``synth_ratio`` is set, that ratio × the mean number of real trainval features
per seen class, so a budget follows the data it runs on (the CPU budgets of the synthetic and
``--like`` runs use a ratio; results.json records count and ratio under ``info.synthetic``). A
median tie in anchor selection takes the first class
instead of crashing; the two backward calls are one summed loss; the lr schedule steps after each
epoch (the original also steps at iteration 0); ZSL T1 comes from a classifier trained on synthetic
unseen features only, as in the TMM code (MM has no T1): S+U outputs of which only the unseen
classes' are targets, the argmax over all of them (``classifier.zsl_outputs: all``; ``unseen``
trains U outputs, as f-CLSWGAN and SC-EGG do).

Distributed (``torchrun``, :mod:`zslfast.distributed`): every rank draws the same batch and
its perturbation noise; the flow's forward and backward run on each rank's rows and the NLL is
taken over the gathered (z, log|det J|); the prototype term f⁻¹(0; sr(a_s)) depends on no sample
and is computed by every rank alike; the final classifiers train data-parallel.

Efficiency the original lacks: each subnet's condition projection is computed once per class in
the batch (not per sample) and once per class when sampling; synthetic features never leave the
device; sampling runs in whole batches per class; the coupling is one fused operator; Adam is fused.
"""
import torch
from torch import nn

from zslfast.engine.generative import GenerativeMethod
from zslfast.engine.recipe import Stage
from zslfast.engine.samplers import ShuffledBatches
from zslfast.nn import ConditionalFlow, class_means
from zslfast.ops.coupling import CLAMP_MODES
from zslfast.optim import adam
from zslfast.config.settings import GENERATIVE_CHECKS, Choice, Float, Int, Section, Width, generative_settings

SETTINGS = Section(
    extends=("features", "attributes", "optim", "schedule", "epochs", "batches", "evaluation", "validation"),
    data_format=Choice("xlsa17", "epgn"),
    flow=Section(blocks=Int(min=1), hidden=Width(), cond_dim=Width(), clamp=Float(min=0, min_open=True),
                 clamp_mode=Choice(*CLAMP_MODES), init_std=Float(min=0, min_open=True)),
    anchors=Choice("seen", "all"),
    perturbation=Float(min=0),
    perturbation_dropout=Float(min=0, max=1, max_open=True),
    proto_weight=Float(min=0),
    **generative_settings(),
    checks=GENERATIVE_CHECKS(),
)


def select_anchors(att):
    """Indices of the three anchor classes: least similar to the others (min cosine row sum), most
    central (max), and the upper median (§2d). Ties take the first class."""
    a = torch.nn.functional.normalize(att.double(), dim=1)
    rho = (a @ a.T).sum(1)
    median_value = rho.sort().values[rho.numel() // 2]
    med = int(torch.nonzero(rho == median_value)[0])
    return [int(rho.argmin()), int(rho.argmax()), med]


class RelativePositioning(nn.Module):
    """sr(a) = Σ_i ReLU(W_i (a − v_i) + b_i) over three frozen anchors v_i (§2d), computed as one GEMM
    with the anchor offsets folded into the biases."""

    def __init__(self, anchors, out_dim):
        super().__init__()
        self.register_buffer("anchors", anchors.clone())
        d = anchors.shape[1]
        self.branches = nn.ModuleList([nn.Linear(d, out_dim) for _ in range(3)])  # default init, as the original

    def forward(self, a):
        w = torch.cat([br.weight for br in self.branches])  # [3·out, d]
        b = torch.cat([br.bias - br.weight @ v for br, v in zip(self.branches, self.anchors)])
        h = torch.relu(torch.addmm(b, a, w.T))
        return h.view(a.shape[0], 3, -1).sum(1)


class GSMFlowModel(nn.Module):
    def __init__(self, feature_dim, anchors, cfg):
        super().__init__()
        f = cfg["flow"]
        self.sr = RelativePositioning(anchors, f["cond_dim"])
        self.flow = ConditionalFlow(feature_dim, f["cond_dim"], f["blocks"], f["hidden"], f["clamp"],
                                    f["clamp_mode"], init_std=f["init_std"])

    def forward(self, x, y, attributes):
        """(z, log|det J|) with z = f(x; sr(a_y)) for features x of classes y; the condition is computed
        once per class present in y."""
        classes, inverse = torch.unique(y, return_inverse=True)
        return self.flow(x, self.sr(attributes[classes]), cond_index=inverse)

    @staticmethod
    def nll_of(z, logdet):
        """The flow's training loss from its outputs on a batch: mean(z²)/2 − mean(log|det J|)/D, i.e.
        the negative log-likelihood per dimension up to the constant ½·log 2π (§2f)."""
        return (z ** 2).mean() / 2 - logdet.mean() / z.shape[1]

    def nll(self, x, y, attributes):
        """The flow's training loss (:meth:`nll_of`) on features x of classes y."""
        return self.nll_of(*self(x, y, attributes))

    def prototypes(self, class_attributes):
        """The visual prototype of each class, f⁻¹(0; sr(a)): the inverse flow of the latent origin
        (§2f). sr is held fixed here (no_grad), as in the original, so this loss trains the flow only."""
        with torch.no_grad():
            cond = self.sr(class_attributes)
        zeros = class_attributes.new_zeros(class_attributes.shape[0], self.flow.dim)
        return self.flow(zeros, cond, rev=True)[0]

    @torch.no_grad()
    def synthesize(self, attributes, classes, n_per_class, generator, batch=4096):
        """n_per_class features per class id in ``classes`` (on the model's device) and their labels."""
        device = attributes.device
        feats, labels = [], []
        for c in classes.tolist():
            cond = self.sr(attributes[c:c + 1])  # one condition row, broadcast over the batch
            for start in range(0, n_per_class, batch):
                n = min(batch, n_per_class - start)
                z = torch.randn(n, self.flow.dim, generator=generator, device=generator.device)
                z = z.to(device=device, dtype=attributes.dtype)
                feats.append(self.flow(z, cond, rev=True)[0])
                labels.append(torch.full((n,), c, dtype=torch.long, device=device))
        return torch.cat(feats), torch.cat(labels)


def build_model(data, cfg, device):
    """An untrained GSMFlowModel for ``data`` (anchors chosen from its seen classes, or from all
    classes with ``anchors: all``), initialised from the global RNG (call it inside ``ctx.init_scope()``)."""
    att = data.attributes
    anchor_pool = att[data.seen_classes.to(att.device)] if cfg["anchors"] == "seen" else att
    return GSMFlowModel(data.feature_dim, anchor_pool[select_anchors(anchor_pool)], cfg).to(device)


def flow_loss(model, x_all, y_all, att, seen, proto_target, cfg, noise_rng):
    """The loss of one batch of positions ``idx``: the flow's NLL on perturbed features x + π·ε (ε
    optionally masked per dimension) plus λ·MSE(f⁻¹(0; sr(a_s)), μ_s) (§2e–f). ``nets.model`` is the
    flow as the engine trains it (in a process group: on each rank's rows, the NLL over the gathered
    (z, log det)); the prototype term depends on no sample (every rank computes it alike)."""
    d = x_all.shape[1]

    def loss(idx, nets):
        x, y = x_all[idx], y_all[idx]
        noise = torch.randn(idx.numel(), d, generator=noise_rng, device=noise_rng.device).to(x.device)
        if cfg["perturbation_dropout"] > 0:
            noise = noise * (torch.rand(d, generator=noise_rng, device=noise_rng.device).to(x.device)
                             > cfg["perturbation_dropout"])
        value = model.nll_of(*nets.model(x + cfg["perturbation"] * noise, y, attributes=att))
        if cfg["proto_weight"] > 0:
            value = value + cfg["proto_weight"] * nn.functional.mse_loss(model.prototypes(att[seen]), proto_target)
        return value

    return loss


class GSMFlow(GenerativeMethod):
    name = "gsmflow"
    settings = SETTINGS
    selected = "flow_epochs"

    def recipe(self, data, config, ctx, epochs):
        """One stage: the flow on ``data``'s trainval split for ``epochs`` epochs of full batches
        (the remainder is dropped, §3), Adam with StepLR."""
        device = ctx.device
        x_all, y_all = data.subset("trainval")
        seen = data.seen_classes.to(device)
        with ctx.init_scope():
            model = build_model(data, config, device)
        opt = adam(model.parameters(), device, config["lr"], config["weight_decay"])
        proto_target = class_means(x_all, y_all, data.num_classes)[0][seen]  # the prototype targets (§2f)
        g = ctx.rng("batch_order", device)  # batch order and perturbation noise share one stream
        yield Stage("gsmflow", modules={"model": model}, optimizer=opt, epochs=epochs, selected=True, evaluates=model,
                    batches=ShuffledBatches(x_all.shape[0], config["batch_size"], g, device, last_batch="drop"),
                    scheduler=torch.optim.lr_scheduler.StepLR(opt, step_size=config["lr_step"], gamma=config["lr_gamma"]),
                    loss=flow_loss(model, x_all, y_all, data.attributes, seen, proto_target, config, g))
        return model

    def generation(self, model, data, config):
        return data, lambda c, k, g: model.synthesize(data.attributes, c, k, g), None

    def generator_networks(self, model):
        return {"flow": model}

    def test_synthesizer(self, networks, record, device):
        """The flow's inverse conditioned on sr(a) of each class embedding."""
        state = networks["flow"]
        model = GSMFlowModel(record["inputs"]["shape"][0], torch.zeros(state["sr.anchors"].shape), record["config"])
        model.load_state_dict(state)
        model = model.to(device).eval()
        att = record["classes"]["embeddings"].to(device, torch.get_default_dtype())
        return lambda c, k, g: model.synthesize(att, c, k, g)
