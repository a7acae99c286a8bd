"""The one model-selection mechanism.

A run has one :class:`Selector`, built from its context's selection mode:

- ``validation`` (default): epochs and hyper-parameters are chosen on the class-disjoint
  validation split of trainval (:meth:`zslfast.data.ZSLDataset.validation_split`, a view that holds
  no test sample), then the model is refitted on all of trainval with the chosen values. The
  training CLI seals the full dataset's test splits for the whole run (reading them raises) except
  in the final scorings the run reports (:meth:`zslfast.data.ZSLDataset.sealed`); a selector used
  on its own seals them while it chooses.
- ``test``: the original papers' protocol (``--select-on-test``): train on trainval, evaluate on the
  test splits at the original's cadence, keep the best evaluation (its weights and its metrics).
- ``fixed``: nothing is chosen (e.g. GRW trains a fixed number of epochs per task).

Every method records its choices through the selector, so results.json has one ``selection``
schema for all of them:

    {"on": "validation" | "test" | "fixed", "metric": "gzsl_h" | ... | null,
     "choices": {NAME: {"value": chosen value, "score": its score, "history": [[candidate, score], ...],
                        "metrics": {every metric of the chosen evaluation} (epoch choices only)}}}

In ``validation`` mode ``metrics`` are validation numbers: what a configuration value is chosen by
(never the test metrics of the run).

Ties keep the first best candidate (the earliest epoch).
"""
from contextlib import nullcontext
from dataclasses import dataclass

from tqdm.auto import tqdm

from zslfast.engine.checkpoint import cpu_state


class BestTracker:
    """The best (highest) score seen so far, with its candidate, an optional copy of a module's
    weights (on the CPU) and an optional payload; ties keep the first."""

    def __init__(self):
        self.candidate = self.score = self.state = self.payload = None
        self.history = []

    def state_dict(self):
        return {"candidate": self.candidate, "score": self.score, "state": self.state, "payload": self.payload,
                "history": [list(h) for h in self.history]}

    def load_state_dict(self, state):
        self.candidate, self.score, self.state = state["candidate"], state["score"], state["state"]
        self.payload, self.history = state["payload"], [list(h) for h in state["history"]]

    def update(self, candidate, score, module=None, payload=None):
        score = float(score)
        self.history.append([candidate, score])
        if self.score is None or score > self.score:
            self.candidate, self.score, self.payload = candidate, score, payload
            if module is not None:
                # a copy: on the CPU .cpu() would alias the weights still being trained
                self.state = cpu_state(module)
            return True
        return False


@dataclass
class Fitted:
    """The outcome of :meth:`Selector.epochs`: the final model, the chosen epoch, the metrics of the
    chosen evaluation on the test splits (``test`` mode only; otherwise the caller evaluates the
    refitted model), the nested choices the chosen evaluation made (e.g. a generative method's
    classifier epochs), and the validation run's model at its best epoch (``validation`` mode)."""

    model: object
    epoch: int
    metrics: dict = None
    nested: dict = None
    val_model: object = None


class Selector:
    """Makes and records every choice of one run (see the module docstring).

    Args:
        data: the run's dataset (already normalised and on the device).
        ctx: the run context (its ``selection`` is the mode).
        metric: the metric every choice maximises.
        validation: the keyword arguments of :meth:`ZSLDataset.validation_split`.
    """

    def __init__(self, data, ctx, metric="gzsl_h", validation=None):
        self.data, self.ctx, self.mode, self.metric = data, ctx, ctx.selection, metric
        self.validation = validation or {}
        self._val = None
        self.choices = {}

    @property
    def val(self):
        """The validation view (built once per run)."""
        if self._val is None:
            self._val = self.data.validation_split(**self.validation)
        return self._val

    def view(self):
        """The data choices are scored on: the validation view, or the data itself in ``test`` mode."""
        return self.data if self.mode == "test" else self.val

    def record(self, name, value, score=None, history=None, metrics=None):
        """Record a choice (also used for values taken as given, with no score); ``metrics``: every
        metric of the chosen candidate's evaluation on the selection view, where there is one."""
        self.choices[name] = {"value": value, "score": score, "history": history or []}
        if metrics is not None:
            self.choices[name]["metrics"] = dict(metrics)

    def to_dict(self):
        return {"on": self.mode, "metric": None if self.mode == "fixed" else self.metric,
                "choices": dict(self.choices)}

    # ------------------------------------------------------------------ choices
    def epochs(self, name, fit, evaluate, epochs, eval_every=1, eval_start=1, test_cadence=None,
               keep_val_model=False, independent=()):
        """Choose a number of epochs for one training stage and return the final model (:class:`Fitted`).

        Args:
            fit: ``fit(data, epochs, on_eval, eval_every, eval_start, phase) -> model`` trains a model
                on ``data``'s trainval for ``epochs`` epochs, calling ``on_eval(model, epoch)`` at the
                evaluation epochs (``on_eval`` may be None); ``phase`` is ``"select"`` on the
                validation view, ``"final"`` otherwise.
            evaluate: ``evaluate(model, data) -> (metrics, nested)``: metrics on ``data``'s test
                splits; ``nested`` the choices that evaluation made itself (``{name: {"value",
                "score", "history"}}``) or None.
            eval_every, eval_start: the evaluation cadence in ``validation`` mode.
            test_cadence: ``(every, start)``, the original's cadence in ``test`` mode (default: the
                validation cadence).
            keep_val_model: return the validation run's model restored to its best epoch (e.g. CVC's
                transductive stage starts its validation run from it).
            independent: in ``test`` mode, metric prefixes (e.g. ``("zsl",)``) whose metrics are
                reported from *their own* best evaluation rather than from the best-``metric`` one,
                each prefix ranked by its first metric of the evaluation's metrics dict: the
                original SC-EGG / TF-VAEGAN protocol, which reports the best T1 and the best H over
                all evaluations independently. The nested choices whose names start with the
                prefix come from that evaluation too, and the choice is recorded as
                ``NAME[PREFIX]``. The returned weights stay those of the best-``metric`` epoch. Not
                used in ``validation`` mode, which refits one model for all metrics.
        """
        # registered: a checkpoint saves the best-so-far (zslfast.engine.resume)
        tracker = self.ctx.register(BestTracker(), f"best {name}")
        extra = ({prefix: self.ctx.register(BestTracker(), f"best {name}[{prefix}]") for prefix in independent}
                 if self.mode == "test" else {})
        if self.mode == "fixed":
            model = fit(self.data, epochs, None, eval_every, eval_start, "final")
            self.record(name, epochs)
            return Fitted(model, epochs)
        test = self.mode == "test"
        view = self.view()

        def on_eval(model, epoch):
            metrics, nested = evaluate(model, view)
            tracker.update(epoch, metrics[self.metric], module=model if (test or keep_val_model) else None,
                           payload=(metrics, nested))
            for prefix, t in extra.items():
                key = next(k for k in metrics if k.startswith(prefix))
                t.update(epoch, metrics[key], payload=(metrics, nested))
            return metrics[self.metric]

        if test:
            every, start = test_cadence or (eval_every, eval_start)
            model = fit(view, epochs, on_eval, every, start, "final")
            model.load_state_dict(tracker.state)
            self._record_tracker(name, tracker)
            metrics, nested = dict(tracker.payload[0]), dict(tracker.payload[1] or {})
            for prefix, t in extra.items():
                self._record_tracker(f"{name}[{prefix}]", t)
                metrics.update({k: v for k, v in t.payload[0].items() if k.startswith(prefix)})
                nested.update({k: v for k, v in (t.payload[1] or {}).items() if k.startswith(prefix)})
            return Fitted(model, tracker.candidate, metrics, nested)
        with self.data.sealed("validation-based selection"):
            val_model = fit(view, epochs, on_eval, eval_every, eval_start, "select")
        if keep_val_model:
            val_model.load_state_dict(tracker.state)
        self._record_tracker(name, tracker)
        model = fit(self.data, tracker.candidate, None, eval_every, eval_start, "final")
        return Fitted(model, tracker.candidate, None, tracker.payload[1], val_model if keep_val_model else None)

    def grid(self, name, candidates, make_scorer, label=None):
        """Choose one of ``candidates``: ``make_scorer(view)`` returns ``score(candidate) -> float``
        on the selection view. Returns the chosen candidate."""
        if self.mode == "fixed":
            raise ValueError("a grid choice needs a validation or test selection mode")
        tracker = BestTracker()
        with self.data.sealed("validation-based selection") if self.mode == "validation" else nullcontext():
            score = make_scorer(self.view())
            for cand in tqdm(candidates, desc=label or name, disable=not self.ctx.progress, leave=False):
                tracker.update(cand, score(cand))
        self._record_tracker(name, tracker)
        return tracker.candidate

    def _record_tracker(self, name, tracker):
        payload = tracker.payload
        self.record(name, tracker.candidate, tracker.score, tracker.history,
                    payload[0] if isinstance(payload, (tuple, list)) else None)


def best_epoch(name, fit, score):
    """Train once and keep the best epoch (no refit), e.g. a final classifier's epoch scored on the
    held-out data of the view being evaluated. ``fit(on_eval) -> model`` calls ``on_eval(model,
    epoch)`` after every epoch; ``score(model) -> float``. Returns the model restored to its best
    epoch and the choice as a nested record ``{name: {"value", "score", "history"}}``."""
    tracker = BestTracker()

    def on_eval(model, epoch):
        s = float(score(model))
        tracker.update(epoch, s, module=model)
        return s

    model = fit(on_eval)
    model.load_state_dict(tracker.state)
    return model, {name: {"value": tracker.candidate, "score": tracker.score, "history": tracker.history}}
