"""The method contract: what a method class declares and implements.

A method is a :class:`Method` subclass listed in :data:`zslfast.engine.registry.METHODS`. It declares
its name, the setting it addresses, its settings (a :class:`zslfast.config.settings.Section`) and
the selection modes it supports, and implements ``run(data, config, ctx) -> MethodResult`` and
``scorer(record)``. A training method does not write ``run`` itself: it subclasses a family that owns
it (:class:`zslfast.engine.generative.GenerativeMethod`,
:class:`zslfast.engine.continual.ContinualMethod`) and declares its stages
(:mod:`zslfast.engine.recipe`), or, like CVC, runs its recipes through the stage runner and the
run's :class:`zslfast.engine.selection.Selector`. A method never loops over epochs, steps an
optimiser, tracks a best score, branches on the selection mode or seeds a random generator itself.
"""
import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from zslfast.engine.context import SELECTION_MODES
from zslfast.config.settings import Section

INPUTS = ("features", "regions")


@dataclass
class MethodResult:
    """What a method returns.

    Attributes:
        metrics: headline metrics (ZSL: ``zsl_t1``, ``gzsl_s``, ``gzsl_u``, ``gzsl_h``; continual:
            ``mSA``, ``mUA``, ``mH``), in percent.
        state: tensors to checkpoint (CPU).
        selection: the run's :meth:`Selector.to_dict` record (one schema for every method).
        per_task: per-task metrics (continual methods).
        timings: seconds per phase.
        info: method-specific facts about the run (e.g. a generative method's synthetic budget).
        model: the exported model (``<out>/model.pt``, :mod:`zslfast.engine.export`): what
            :meth:`Method.scorer` needs at test time (tensors, state dicts, plain values), and the
            feature ``normalization`` the method trained with.
    """

    metrics: dict
    state: dict
    selection: dict
    per_task: list = None
    timings: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    model: dict = None


class Method(ABC):
    """Base class of every method (see the module docstring).

    Class attributes to set:
        name: the registry name (``--method NAME``; config ``zslfast/config/methods/NAME.yaml``).
        setting: what it addresses, for results.json (e.g. ``"zsl+gzsl"``).
        settings: its declared configuration keys (:class:`zslfast.config.settings.Section`).
        selection_modes: the :data:`SELECTION_MODES` it supports; the first is its default.
        inputs: what its data holds: ``features`` (one vector per image, :class:`ZSLDataset`) or
            ``regions`` (region feature maps, :class:`zslfast.data.RegionDataset`).
    """

    name = None
    setting = None
    settings = None
    selection_modes = ("validation", "test")
    inputs = "features"

    @property
    def default_selection(self):
        return self.selection_modes[0]

    def embedding(self, config):
        """The semantic embedding a run uses, as tables label it: the class-embedding file key
        (``att``, ``original_att``, ``sent``); methods that also read word vectors add them."""
        return config.get("attributes", "att")

    def test_scorings(self, config):
        """How many test evaluations a validation-selection run reports (its metrics, plus e.g.
        CVC's inductive metrics beside the transductive ones): the number of scoring windows its
        sealed data opens (:meth:`zslfast.data.ZSLDataset.sealed`); one more read of the test
        splits raises."""
        return 1

    def check_data(self, data, config):
        """Raise a :class:`zslfast.errors.ZSLError` (naming the setting to change) when ``config``
        cannot run on ``data``, e.g. episodes of more classes than the data has. Called before any
        training on the run's data and, under validation selection, on its validation view too
        (fewer classes). The default accepts everything."""

    @abstractmethod
    def scorer(self, record, device="cpu"):
        """A :class:`zslfast.engine.export.Scorer` from an exported model record (``model.pt``)."""

    def with_classes(self, record, names, embeddings, device="cpu", seed=0):
        """The exported ``record`` with new candidate classes (``names``, ``embeddings`` [K', d] in the
        form the run's class-embedding file stores them): they become the unseen classes (ids
        0..K'-1), the trained seen classes follow (:func:`zslfast.engine.export.replace_classes`).
        Embedding methods score any class from its embedding, so this default only relabels; methods
        with per-class state (learned rows, final classifiers) override it. ``seed``: the random
        stream of any refit."""
        from zslfast.engine.export import replace_classes

        return replace_classes(record, names, embeddings, record["classes"]["seen"])

    @abstractmethod
    def run(self, data, config, ctx):
        """Train and evaluate on ``data`` with the resolved ``config``; returns a :class:`MethodResult`."""


def check_contract(cls, name=None):
    """Raise TypeError when ``cls`` does not fulfil the :class:`Method` contract."""
    problems = []
    if inspect.isabstract(cls):
        problems.append(f"abstract members left: {', '.join(sorted(cls.__abstractmethods__))}")
    if not isinstance(cls.name, str) or (name is not None and cls.name != name):
        problems.append(f"name is {cls.name!r}, registered as {name!r}")
    if not isinstance(cls.setting, str):
        problems.append("setting is not a string")
    if not isinstance(cls.settings, Section):
        problems.append("settings is not a zslfast.config.settings.Section")
    if cls.inputs not in INPUTS:
        problems.append(f"inputs {cls.inputs!r} must be one of {INPUTS}")
    modes = cls.selection_modes
    if not modes or any(m not in SELECTION_MODES for m in modes):
        problems.append(f"selection_modes {modes!r} must be a non-empty subset of {SELECTION_MODES}")
    if problems:
        raise TypeError(f"{cls.__module__}.{cls.__qualname__} breaks the Method contract: " + "; ".join(problems))
