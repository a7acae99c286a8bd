"""ESZSL: "An embarrassingly simple approach to zero-shot learning" (Romera-Paredes & Torr, ICML 2015).

A bilinear compatibility x·V·a between features x and class embeddings a, with the closed-form
solution V = (XᵀX + γI)⁻¹ Xᵀ Y A_s (A_sᵀA_s + λI)⁻¹ for training features X [n, D], targets
Y ∈ {−1, 1}^{n×S} over the S training classes, and their embeddings A_s [S, d]. Hyper-parameters γ and
λ (powers of ten) are chosen by the engine's selector (the class-disjoint validation split by default,
the test split with ``--select-on-test``); the model is then refitted on all of trainval. A fast, deterministic baseline that exercises the data and evaluation path.
"""
import itertools
import time

import torch

from zslfast.engine.export import Scorer, calibrated, masked
from zslfast.engine.method import Method, MethodResult
from zslfast.engine.selection import Selector
from zslfast.eval.metrics import zsl_gzsl_metrics
from zslfast.config.settings import Choice, Float, Int, Numbers, Section

SETTINGS = Section(
    extends=("features", "attributes", "validation"),
    gamma_exponents=Numbers(Int(min=-12, max=12)),   # γ = 10^k
    lambda_exponents=Numbers(Int(min=-12, max=12)),  # λ = 10^k
    select_metric=Choice("zsl_t1", "gzsl_h"),
    calibration=Float(),
)


class ESZSLSolver:
    """Closed-form ESZSL for many (γ, λ): XᵀX = Q_x E_x Q_xᵀ and A_sᵀA_s = Q_a E_a Q_aᵀ are
    decomposed once, after which V(γ, λ) = Q_x (E_x + γ)⁻¹ Q_xᵀ · XᵀY A_s · Q_a (E_a + λ)⁻¹ Q_aᵀ
    costs a few small products per candidate instead of a new D×D solve."""

    def __init__(self, features, labels, attributes):
        classes = torch.unique(labels)
        a_s = attributes[classes].double()
        x = features.double()
        y = -torch.ones(x.shape[0], classes.numel(), dtype=torch.float64, device=x.device)
        y[torch.arange(x.shape[0], device=x.device), torch.searchsorted(classes, labels)] = 1.0
        self.ex, self.qx = torch.linalg.eigh(x.T @ x)
        self.ea, self.qa = torch.linalg.eigh(a_s.T @ a_s)
        self.core = self.qx.T @ (x.T @ y @ a_s) @ self.qa  # [D, d] in the two eigenbases
        self.dtype = features.dtype

    def weights(self, gamma, lam):
        """V [D, d] for ridge parameters γ (feature side) and λ (attribute side)."""
        scaled = self.core / (self.ex + gamma)[:, None] / (self.ea + lam)[None, :]
        return (self.qx @ scaled @ self.qa.T).to(self.dtype)


def fit_eszsl(features, labels, attributes, gamma, lam):
    """Closed-form ESZSL weights V [D, d] from (features, labels) and all class embeddings [C, d]:
    V = (XᵀX + γI)⁻¹ Xᵀ Y A_s (A_sᵀA_s + λI)⁻¹."""
    return ESZSLSolver(features, labels, attributes).weights(gamma, lam)


class ESZSL(Method):
    name = "eszsl"
    setting = "zsl+gzsl"
    settings = SETTINGS

    def run(self, data, config, ctx):
        t0 = time.perf_counter()
        data = data.normalized(config["feature_norm"]).to(ctx.device)
        attributes = data.attributes
        selector = Selector(data, ctx, config["select_metric"], config["validation"])

        def evaluate(split_data, v):
            return zsl_gzsl_metrics(lambda x: x @ v @ attributes.T, split_data, calibration=config["calibration"])

        def make_scorer(view):  # one eigendecomposition per view, then a few products per candidate
            x, y = view.subset("trainval")
            solver = ESZSLSolver(x, y.to(x.device), attributes)
            return lambda c: evaluate(view, solver.weights(10.0 ** c[0], 10.0 ** c[1]))[config["select_metric"]]

        grid = [list(c) for c in itertools.product(config["gamma_exponents"], config["lambda_exponents"])]
        ge, le = selector.grid("gamma_lambda_exponents", grid, make_scorer, label="eszsl grid")
        t1 = time.perf_counter()
        x, y = data.subset("trainval")
        v = fit_eszsl(x, y.to(x.device), attributes, 10.0 ** ge, 10.0 ** le)
        t2 = time.perf_counter()
        metrics = evaluate(data, v)
        model = {"V": v, "calibration": config["calibration"],
                 "normalization": data.normalization}
        return MethodResult(metrics=metrics, state={"V": v.cpu()}, selection=selector.to_dict(), model=model,
                            info={"gamma": 10.0 ** ge, "lambda": 10.0 ** le},
                            timings={"select_s": t1 - t0, "fit_s": t2 - t1, "eval_s": time.perf_counter() - t2})

    def scorer(self, record, device="cpu"):
        """Bilinear scores x·V·Aᵀ against every class embedding."""
        m = record["model"]
        v, emb = m["V"].to(device), record["classes"]["embeddings"].to(device)
        seen, unseen = record["classes"]["seen"].to(device), record["classes"]["unseen"].to(device)
        return Scorer(lambda x: calibrated(x.to(device) @ v @ emb.T, seen, m["calibration"]),
                      lambda x: masked(x.to(device) @ v @ emb.T, unseen))
