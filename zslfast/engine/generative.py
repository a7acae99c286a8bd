"""The generative family: methods that learn to synthesize unseen-class features (GSMFlow, SC-EGG,
and any feature generator added later) share one run, owned here.

A generative method declares:

- ``recipe(data, config, ctx, epochs)``: its stages (:mod:`zslfast.engine.recipe`), the generator's
  stage marked ``selected=True`` with ``evaluates=model``; returns the model;
- ``generation(model, data, config)``: ``(data evaluated, synthesize, inputs)``: the dataset the
  final classifiers train and score on (usually ``data``; SC-EGG's dense cache), the sampler
  ``synthesize(classes, n_per_class, generator) -> (features, labels)`` and an optional map of the
  classifiers' inputs;
- optionally ``prepare`` (the data as the method trains on it) and ``finish`` (facts for ``info``).

:meth:`GenerativeMethod.run` then does, in this order: prepare the data; let the run's
:class:`~zslfast.engine.selection.Selector` choose the generator's epochs (validation mode: the
recipe on the validation view with an evaluation at the configured cadence, then the recipe again on
trainval for the chosen count; test mode: one run on trainval, evaluated on the test splits at
``test_cadence``, best kept); record the final classifiers' epoch choices nested in the chosen
evaluation; evaluate the final model with those classifier epochs (validation mode); export the
state and timings.
"""
import time
from abc import abstractmethod

import torch

from zslfast.engine.checkpoint import cpu_state
from zslfast.engine.export import Scorer, calibrated
from zslfast.engine.method import Method, MethodResult
from zslfast.engine.recipe import Evaluation, run_recipe
from zslfast.engine.selection import Selector
from zslfast.eval.classifier import SoftmaxClassifier, train_softmax_classifier
from zslfast.eval.generative import generative_evaluation, synthetic_budget


class GenerativeMethod(Method):
    """A feature-generating ZSL method (see the module docstring)."""

    setting = "zsl+gzsl"
    selected = "epochs"        # the name of the generator's epoch choice in results.json
    test_cadence = None        # (every, start) under --select-on-test; None: the validation cadence
    independent = ()           # metric prefixes reported from their own best evaluation (test mode)

    def prepare(self, data, config, ctx):
        """The data as the method trains on it (default: normalised features on the device)."""
        return data.normalized(config["feature_norm"]).to(ctx.device)

    @abstractmethod
    def recipe(self, data, config, ctx, epochs):
        """The stages (a generator of Stage / Transform items, see :mod:`zslfast.engine.recipe`)."""

    @abstractmethod
    def generation(self, model, data, config):
        """(the dataset evaluated, ``synthesize(classes, n, generator)``, classifier-input map or None)."""

    def finish(self, model, data, config, ctx):
        """After the final evaluation: method facts for results.json's ``info`` beside the synthetic
        budget (and anything the plots need in ``ctx.artifacts``)."""
        return {}

    @abstractmethod
    def generator_networks(self, model):
        """{name: module} of the networks that synthesize features at test time (exported beside
        :meth:`test_networks`, so that new classes can be added to a trained model: :meth:`with_classes`)."""

    @abstractmethod
    def test_synthesizer(self, networks, record, device):
        """``synthesize(classes, n, generator) -> (features, labels)`` for the class ids of
        ``record["classes"]`` (their embeddings), from the exported ``networks``: the
        generator-space features the final classifiers' inputs (:meth:`classifier_inputs`) are
        computed from."""

    def test_networks(self, model):
        """{name: state dict} of the networks the exported model needs at test time besides the final
        classifiers (default: none: the classifiers read the features themselves)."""
        return {}

    def test_features(self, networks, record, device):
        """``f(samples) -> generator-space features`` from the exported ``networks`` (default: the
        identity; SC-EGG: region maps to dense features)."""
        return lambda x: x

    def classifier_inputs(self, networks, record, device):
        """``f(generator-space features) -> the final classifiers' inputs`` (default: the identity;
        TF-VAEGAN and SC-EGG: [x, Dec(x), Dec.hidden(x)])."""
        return lambda x: x

    def test_inputs(self, networks, record, device):
        """``f(samples) -> classifier inputs``: :meth:`test_features`, then :meth:`classifier_inputs`."""
        features = self.test_features(networks, record, device)
        inputs = self.classifier_inputs(networks, record, device)
        return lambda x: inputs(features(x))

    def evaluate(self, model, data, config, ctx, classifier_epochs=None, keep=None):
        """The generative evaluation (:func:`zslfast.eval.generative_evaluation`) of ``model`` on
        ``data``: each final classifier trained for ``classifier_epochs[kind]`` epochs, or for its
        best epoch on the evaluated data's held-out splits when None. Returns (metrics, nested)."""
        evaluated, synthesize, inputs = self.generation(model, data, config)
        n = synthetic_budget(evaluated, config["synth_per_class"], config["synth_ratio"])[0]
        return generative_evaluation(synthesize, evaluated, n, config["classifier"], ctx,
                                     select=classifier_epochs is None, epochs=classifier_epochs,
                                     calibration=config["calibration"], inputs=inputs, keep=keep)

    def run(self, data, config, ctx):
        t0 = time.perf_counter()
        data = self.prepare(data, config, ctx)
        _, budget = synthetic_budget(data, config["synth_per_class"], config["synth_ratio"])
        selector = Selector(data, ctx, "gzsl_h", config["validation"])
        timings, last = {}, {}

        def fit(view, epochs, on_eval, every, start, phase):
            result = run_recipe(self.recipe(view, config, ctx, epochs), ctx, Evaluation(on_eval, every, start), phase)
            timings.clear()
            timings.update(result.timings)  # the last fit's: the final model's
            last["stage"] = result.selected
            return result.model

        fitted = selector.epochs(self.selected, fit, lambda model, view: self.evaluate(model, view, config, ctx),
                                 config["epochs"], config["eval_every"], config["eval_start"],
                                 test_cadence=self.test_cadence, independent=self.independent)
        for name, choice in fitted.nested.items():  # the final classifiers' epochs, chosen in that evaluation
            selector.record(name, choice["value"], choice["score"], choice["history"])
        t1 = time.perf_counter()
        metrics, classifiers = fitted.metrics, {}
        if metrics is None:  # validation: the refitted model, classifiers trained for the chosen epochs
            chosen = {k: fitted.nested[f"{k}_classifier_epochs"]["value"] for k in ("gzsl", "zsl")}
            metrics, _ = self.evaluate(fitted.model, data, config, ctx, chosen, keep=classifiers)
        else:  # test: the chosen evaluation again (its keyed draws: the same classifiers), for the export
            with ctx.evaluation(f"{last['stage']}/epoch {fitted.epoch}"):
                self.evaluate(fitted.model, data, config, ctx, keep=classifiers)
        info = {"synthetic": budget, **self.finish(fitted.model, data, config, ctx)}
        # the test-time networks and the generator's (one copy of a network both use, e.g. a decoder)
        networks = {**self.test_networks(fitted.model), **self.generator_networks(fitted.model)}
        exported = {"networks": cpu_state_dicts(networks),
                    "classifiers": {k: cpu_state(c) for k, c in classifiers.items()},
                    # what a refit for new classes needs (with_classes) besides the generator: the
                    # synthetic counts (per seen class: as many as it had real features) and the epochs
                    "synthetic": {"per_unseen_class": budget["per_unseen_class"],
                                  "per_seen_class": max(1, round(budget["real_per_seen_class"]))},
                    "classifier_epochs": {k: fitted.nested[f"{k}_classifier_epochs"]["value"] for k in ("gzsl", "zsl")},
                    "zsl_outputs": config["classifier"].get("zsl_outputs", "unseen"),
                    "calibration": config["calibration"], "normalization": data.normalization or {"kind": "none"}}
        return MethodResult(metrics=metrics, state=cpu_state(fitted.model), selection=selector.to_dict(), info=info,
                            model=exported, timings={**timings, "train_s": t1 - t0, "eval_s": time.perf_counter() - t1})

    def scorer(self, record, device="cpu"):
        """The exported model's :class:`~zslfast.engine.export.Scorer`: the final classifiers on the
        classifier inputs of :meth:`test_inputs` (GZSL calibrated; ZSL over the unseen classes, or over
        all K with ``zsl_outputs: all``)."""
        m, classes = record["model"], record["classes"]
        seen, unseen = classes["seen"].to(device), classes["unseen"].to(device)
        gzsl_clf, zsl_clf = (linear_classifier(m["classifiers"][k], device) for k in ("gzsl", "zsl"))
        inputs = self.test_inputs(m["networks"], record, device)

        def gzsl(x):
            return calibrated(gzsl_clf(inputs(x)), seen, m["calibration"])

        def zsl(x):
            scores = zsl_clf(inputs(x))
            if m["zsl_outputs"] == "all":
                return scores
            out = scores.new_full((scores.shape[0], len(classes["names"])), -float("inf"))
            out[:, unseen] = scores
            return out

        return Scorer(torch.no_grad()(gzsl), torch.no_grad()(zsl))


    def with_classes(self, record, names, embeddings, device="cpu", seed=0):
        """New classes for a generative model: the exported generator synthesizes features for the new
        classes (``synthetic.per_unseen_class`` each) and for the trained seen classes (as many each
        as the seen classes had real features: those are not stored, which keeps model.pt small),
        and the two final classifiers are trained again on them, for the epochs chosen in the run,
        with the run's classifier settings; the random stream is ``seed``'s."""
        record = super().with_classes(record, names, embeddings, device, seed)
        m, cfg = record["model"], record["config"]["classifier"]
        device = torch.device(device)
        k, new = len(record["classes"]["names"]), len(names)
        g = torch.Generator(device).manual_seed(seed)
        synthesize = self.test_synthesizer(m["networks"], record, device)
        x_new, y_new = synthesize(torch.arange(new, device=device), m["synthetic"]["per_unseen_class"], g)
        x_seen, y_seen = synthesize(torch.arange(new, k, device=device), m["synthetic"]["per_seen_class"], g)
        inputs = self.classifier_inputs(m["networks"], record, device)  # synthetic features: generator space
        with torch.no_grad():
            x_new, x_seen = inputs(x_new), inputs(x_seen)

        def fit(x, y, kind, num_classes):
            clf, _ = train_softmax_classifier(x, y, num_classes, m["classifier_epochs"][kind], cfg["lr"],
                                              cfg["batch_size"], generator=g, init=cfg.get("init", "xavier"))
            return cpu_state(clf)

        # the unseen ids are 0..K'-1, so the ZSL labels need no mapping (zsl_outputs unseen: K' outputs)
        m["classifiers"] = {"gzsl": fit(torch.cat([x_seen, x_new]), torch.cat([y_seen, y_new]), "gzsl", k),
                            "zsl": fit(x_new, y_new, "zsl", k if m["zsl_outputs"] == "all" else new)}
        return record


def cpu_state_dicts(modules):
    return {name: cpu_state(m) for name, m in modules.items()}


def linear_classifier(state, device):
    """A final classifier rebuilt from its exported state dict."""
    out_dim, in_dim = state["fc.weight"].shape
    clf = SoftmaxClassifier(in_dim, out_dim, device=device)
    clf.load_state_dict(state)
    return clf.eval()
