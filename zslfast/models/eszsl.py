"""ESZSL: "An embarrassingly simple approach to zero-shot learning" (Romera-Paredes & Torr, ICML 2015).

A bilinear compatibility x·V·a between features x and class embeddings a, with the closed-form
solution V = (XᵀX + γI)⁻¹ Xᵀ Y A_s (A_sᵀA_s + λI)⁻¹ for training features X [n, D], targets
Y ∈ {−1, 1}^{n×S} over the S training classes, and their embeddings A_s [S, d]. Hyper-parameters γ and
λ (powers of ten) are chosen on the class-disjoint validation split; the model is then refitted on
all of trainval. A fast, deterministic baseline that exercises the data and evaluation path.
"""
import itertools
import time

import torch
from tqdm.auto import tqdm

from zslfast.eval.metrics import zsl_gzsl_metrics
from zslfast.methods import MethodResult, register
from zslfast.settings import ATTRIBUTES, FEATURE_NORM, VALIDATION, Choice, Float, Int, Numbers, Section

SETTINGS = Section(
    feature_norm=FEATURE_NORM(),
    attributes=ATTRIBUTES(),
    gamma_exponents=Numbers(Int(min=-12, max=12)),   # γ = 10^k
    lambda_exponents=Numbers(Int(min=-12, max=12)),  # λ = 10^k
    select_metric=Choice("zsl_t1", "gzsl_h"),
    calibration=Float(),
    validation=VALIDATION(),
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


@register
class ESZSLMethod:
    name = "eszsl"
    setting = "zsl+gzsl"
    selection = "validation"
    settings = SETTINGS

    def run(self, data, config, ctx):
        t0 = time.perf_counter()
        data = data.normalized(config["feature_norm"]).to(ctx.device)
        attributes = data.attributes

        def evaluate(split_data, v):
            return zsl_gzsl_metrics(lambda x: x @ v @ attributes.T, split_data, calibration=config["calibration"])

        # Model selection: on the validation split by default, on the test split only on request.
        select_data = data if ctx.select_on_test else data.validation_split(**config["validation"])
        grid = list(itertools.product(config["gamma_exponents"], config["lambda_exponents"]))
        x, y = select_data.subset("trainval")
        solver = ESZSLSolver(x, y.to(x.device), attributes)
        scores = []
        for ge, le in tqdm(grid, desc="eszsl grid", disable=not ctx.progress, leave=False):
            scores.append(evaluate(select_data, solver.weights(10.0 ** ge, 10.0 ** le))[config["select_metric"]])
        best = max(range(len(grid)), key=lambda i: scores[i])
        ge, le = grid[best]
        t1 = time.perf_counter()
        x, y = data.subset("trainval")
        v = fit_eszsl(x, y.to(x.device), attributes, 10.0 ** ge, 10.0 ** le)
        t2 = time.perf_counter()
        metrics = evaluate(data, v)
        selection = {"on": "test (original protocol)" if ctx.select_on_test else "validation",
                     "metric": config["select_metric"], "gamma": 10.0 ** ge, "lambda": 10.0 ** le,
                     "score": scores[best], "candidates": len(grid)}
        return MethodResult(metrics=metrics, state={"V": v.cpu()}, selection=selection,
                            timings={"select_s": t1 - t0, "fit_s": t2 - t1, "eval_s": time.perf_counter() - t2})
