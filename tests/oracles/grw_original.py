"""GRW-CZSL's original formulation (IGCZSL ``main``) of the hot pieces of a training step: a test
oracle for :class:`zslfast.models.grw.Formulation` and the baseline of ``benchmarks/bench_train.py
--method grw``. Not shipped in the package: nothing at run time uses it."""
import torch
import torch.nn.functional as F

from zslfast.models.grw import Formulation
from zslfast.ops import reference


class OriginalFormulation(Formulation):
    """The original code's formulation of the same quantities (IGCZSL ``main``): D run on B×K
    repeated attribute rows, walks through explicit matrix powers P_xx^t with one shared S_xc, Python
    loops over classes. Same values as :class:`Formulation` up to rounding; much slower."""

    name = "original"
    runs_embedder = True

    def real_alignment(self, protos_y, x, scale, eps, mode):
        p, q = F.normalize(protos_y, dim=-1), F.normalize(x, dim=-1)
        if mode == "matched":
            return torch.log(scale * F.cosine_similarity(p, q, dim=-1).mean() + eps)
        # [B, 1, D] against [B, D]: broadcast to B×B cosines, as the original computes it
        return torch.log(scale * F.cosine_similarity(p.unsqueeze(1), q, dim=-1).mean() + eps)

    def seen_scores(self, embedder, att_seen, prototypes, x, scale):
        b, k = x.shape[0], att_seen.shape[0]
        protos = embedder(att_seen.unsqueeze(0).expand(b, k, -1).reshape(b * k, -1)).view(b, k, -1)
        return scale * F.cosine_similarity(protos, x.unsqueeze(1).expand(b, k, -1), dim=2)

    def walk_loss(self, centers, points, steps, decay, target, visit_weight, temperature, clamp=1e-10):
        s_xc = reference.similarity(points, centers, "cosine") / temperature
        p_cx = torch.softmax(s_xc.T, dim=1)
        landing = reference.random_walk_landing_dense(centers, points, steps, temperature).clamp(clamp, 1 - clamp)
        loss = 0.0
        for t in range(steps + 1):
            lt = torch.log(landing[t])
            loss = loss + decay ** t * -(torch.diagonal(lt).mean() if target == "diag" else lt.mean())
        if visit_weight:
            loss = loss + visit_weight * -torch.log(p_cx.mean(0).clamp(clamp, 1 - clamp)).mean()
        return loss

    def euclidean_loss(self, x_gen, y, mu_seen):
        loss = 0.0
        for k in torch.unique(y).tolist():
            loss = loss + (x_gen[y == k].mean(0) - mu_seen[k]).norm()
        return loss / mu_seen.shape[0]

    def correlation_loss(self, x_gen, y, mu_seen, neighbours, sigma, margin, lower, weight, reduction):
        terms = []
        for k in torch.unique(y).tolist():
            m = x_gen[y == k].mean(0)
            for n in range(neighbours.shape[1]):
                c = F.cosine_similarity(m, mu_seen[neighbours[k, n]], dim=0)
                s = sigma[k, n]
                terms.append(torch.relu(c - (s + margin)) ** 2 + torch.relu((s - lower) - c) ** 2)
        pen = torch.stack(terms)
        return weight * (pen.sum() if reduction == "sum" else pen.mean())
