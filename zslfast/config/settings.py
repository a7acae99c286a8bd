"""Declared settings: every configuration key of a method, with its type and allowed values.

Each method lists its settings once, as data (``settings = Section(...)`` on the method class, next
to its networks); :func:`zslfast.config.resolve_config` checks the fully resolved configuration
against that declaration before any data is loaded. A bad value raises one
:class:`~zslfast.errors.ZSLError` naming the key, the value and what is allowed, e.g.

    setting lr = 'abc': expected a number > 0

so the CLI exits 2 with that line instead of failing deep inside training (or, worse, training
nothing). Checking returns a normalised copy: integral floats become ints where an integer is
declared (``--set synth_per_class=1e3``), ints become floats where a number is declared.
"""
import abc
import copy
import math
import os

from zslfast.data.dataset import NORMALIZATIONS
from zslfast.data.xlsa17 import ATTRIBUTE_SOURCES
from zslfast.errors import ZSLError


def _show(value):
    return repr(value) if isinstance(value, str) else ("null" if value is None else str(value))


class Setting(abc.ABC):
    """One declared value. ``nullable``: ``null`` is allowed (and means "not set" / "automatic").
    Each kind of value (Int, Float, Bool, Choice, File, Text, Names, Numbers) says what it accepts
    (:meth:`describe`) and how a value is checked (:meth:`_convert`)."""

    def __init__(self, nullable=False, doc=""):
        self.nullable = nullable
        self.doc = doc

    @abc.abstractmethod
    def describe(self):
        """What the setting accepts, in words (for error messages)."""

    @abc.abstractmethod
    def _convert(self, value):
        """The checked value, or raise ValueError (the caller words the error)."""

    def check(self, value, key):
        if value is None:
            if self.nullable:
                return None
            raise ZSLError(f"setting {key} = null: expected {self.describe()}")
        try:
            return self._convert(value)
        except (TypeError, ValueError):
            allowed = self.describe() + (" or null" if self.nullable else "")
            raise ZSLError(f"setting {key} = {_show(value)}: expected {allowed}") from None


def _num(v):
    return str(v) if isinstance(v, int) else f"{v:g}"


def _range_text(lo, hi, lo_open, hi_open):
    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{_num(lo)}, {_num(hi)}{')' if hi_open else ']'}"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {_num(lo)}"
    if hi is not None:
        return f" {'<' if hi_open else '<='} {_num(hi)}"
    return ""


class _Number(Setting):
    kind = "a number"

    def __init__(self, min=None, max=None, min_open=False, max_open=False, **kw):
        super().__init__(**kw)
        self.lo, self.hi, self.lo_open, self.hi_open = min, max, min_open, max_open

    def describe(self):  # the integer ceiling INT_MAX goes unsaid unless it is the value refused
        hi = None if self.hi == INT_MAX else self.hi
        return self.kind + _range_text(self.lo, hi, self.lo_open, hi is not None and self.hi_open)

    def _in_range(self, v):
        if self.lo is not None and (v < self.lo or (self.lo_open and v == self.lo)):
            raise ValueError
        if self.hi is not None and (v > self.hi or (self.hi_open and v == self.hi)):
            raise ValueError
        return v


INT_MAX = 2 ** 31 - 1  # every integer setting's ceiling (counts, epochs, sizes go into int32 kernels)
WIDTH_MAX = 65536     # a layer width; at 65 536 one square layer's float32 weights alone take 16 GiB
COUNT_MAX = 10 ** 6   # samples per class to synthesise: 10^6 × 2048-d float32 features is 8 GiB per class


class Int(_Number):
    """An integer (an integral float such as 1e3 is accepted and converted), at most ``INT_MAX``
    unless a lower ``max`` is declared."""

    kind = "an integer"

    def __init__(self, min=None, max=INT_MAX, **kw):
        super().__init__(min=min, max=max, **kw)

    def check(self, value, key):
        if self.hi == INT_MAX and isinstance(value, (int, float)) and not isinstance(value, bool) and value > INT_MAX:
            raise ZSLError(f"setting {key} = {_show(value)}: expected an integer <= {INT_MAX}")
        return super().check(value, key)

    def _convert(self, value):
        if isinstance(value, bool):
            raise TypeError
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise TypeError
        return self._in_range(value)


def Width(**kw):
    """A layer width: an integer in [1, WIDTH_MAX], so a typo such as 10^9 is refused before the
    run tries to allocate it."""
    return Int(min=1, max=WIDTH_MAX, **kw)


class Float(_Number):
    """A finite real number (integers are accepted and converted)."""

    def _convert(self, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError
        value = float(value)
        if not math.isfinite(value):
            raise ValueError
        return self._in_range(value)


class Bool(Setting):
    def describe(self):
        return "true or false"

    def _convert(self, value):
        if not isinstance(value, bool):
            raise TypeError
        return value


class Choice(Setting):
    """One of a fixed set of strings."""

    def __init__(self, *options, **kw):
        super().__init__(**kw)
        self.options = options

    def describe(self):
        return "one of " + ", ".join(self.options)

    def _convert(self, value):
        if value not in self.options:
            raise ValueError
        return value


class File(Setting):
    """The path of an existing file."""

    def describe(self):
        return "the path of an existing file"

    def _convert(self, value):
        if not isinstance(value, str) or not os.path.isfile(value):
            raise ValueError
        return value


class Text(Setting):
    """Any string (e.g. a keyword or a path, interpreted by the code that uses it)."""

    def describe(self):
        return "a string"

    def _convert(self, value):
        if not isinstance(value, str):
            raise TypeError
        return value


class Names(Setting):
    """A list of strings (possibly empty), e.g. setting names."""

    def describe(self):
        return "a list of strings"

    def _convert(self, value):
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise TypeError
        return list(value)


class Numbers(Setting):
    """A list of numbers of ``item``'s kind; ``length`` fixes its size, ``increasing`` requires
    a non-decreasing list."""

    def __init__(self, item, length=None, min_length=1, increasing=False, **kw):
        super().__init__(**kw)
        self.item, self.length, self.min_length, self.increasing = item, length, min_length, increasing

    def describe(self):
        size = f"{self.length} " if self.length else ("a non-empty list of " if self.min_length else "a list of ")
        text = (f"a list of {size}" if self.length else size) + self.item.describe().replace("an integer", "integers") \
            .replace("a number", "numbers")
        return text + (", non-decreasing" if self.increasing else "")

    def _convert(self, value):
        if not isinstance(value, (list, tuple)):
            raise TypeError
        if (self.length and len(value) != self.length) or len(value) < self.min_length:
            raise ValueError
        out = [self.item._convert(v) for v in value]
        if self.increasing and any(a > b for a, b in zip(out, out[1:])):
            raise ValueError
        return out


class Section:
    """A mapping of named settings (nested sections allowed).

    ``checks`` are rules over several keys of this section: functions ``f(values) -> message or
    None``, run after every key has passed its own check.
    """

    def __init__(self, checks=(), extends=(), **fields):
        """``extends``: names of shared blocks (:data:`BLOCKS`) whose settings this section holds
        too, with the blocks' declarations and defaults; a field given here replaces a block's
        declaration (e.g. GRW's ``batch_size`` of at least 2)."""
        unknown = [b for b in extends if b not in BLOCKS]
        if unknown:
            raise ValueError(f"unknown shared blocks {unknown} (known: {', '.join(BLOCKS)})")
        self.extends = tuple(extends)
        shared = {name: decl for block in self.extends for name, (decl, _) in BLOCKS[block].items()}
        self.fields = {**shared, **fields}
        self.checks = tuple(checks)

    def block_defaults(self):
        """{name: default} of the shared blocks this section extends (copies)."""
        return {name: copy.deepcopy(default) for block in self.extends
                for name, (_, default) in BLOCKS[block].items()}

    def check(self, value, key=""):
        where = f"setting {key}" if key else "the configuration"
        if not isinstance(value, dict):
            raise ZSLError(f"{where} = {_show(value)}: expected a mapping of {', '.join(self.fields)}")
        unknown = sorted(set(value) - set(self.fields))
        if unknown:
            name = f"{key}.{unknown[0]}" if key else unknown[0]
            raise ZSLError(f"unknown setting '{name}' (known: {', '.join(sorted(self.fields))})")
        out = {}
        for name, spec in self.fields.items():
            full = f"{key}.{name}" if key else name
            if name not in value:
                raise ZSLError(f"setting {full} is missing from the configuration (declared: {spec_text(spec)})")
            out[name] = spec.check(value[name], full)
        for rule in self.checks:
            problem = rule(out)
            if problem:
                raise ZSLError(f"settings{' of ' + key if key else ''}: {problem}")
        return out

    def validate(self, config):
        """Check a whole resolved configuration; returns the normalised copy."""
        return self.check(config)


def setting_keys(config, prefix=""):
    """Every dotted key of a (nested) configuration, sections included (``gan``, ``gan.lr``, ...)."""
    for k, v in config.items():
        yield prefix + k
        if isinstance(v, dict):
            yield from setting_keys(v, prefix + k + ".")


def setting_value(config, key):
    """The value of dotted ``key`` in a nested configuration."""
    for part in key.split("."):
        config = config[part]
    return config


def names_settings(field, allow_all=False):
    """A Section check: every entry of the ``field`` list names a setting (or is ``*`` with
    ``allow_all``), e.g. the presets' ``not_released`` lists."""
    def check(config):
        known = set(setting_keys(config))
        return next((f"{field} names {k!r}, which is not a setting" + (" (or '*': all of them)" if allow_all else "")
                     for k in config[field] if not (allow_all and k == "*") and k not in known), None)

    return check


def expand_names(config, names, excluded=()):
    """``names`` (dotted setting keys) with ``*`` expanded to every leaf setting of ``config`` outside
    the ``excluded`` keys and sections."""
    if "*" not in names:
        return list(names)
    return [k for k in setting_keys(config) if not isinstance(setting_value(config, k), dict)
            and not any(k == e or k.startswith(e + ".") for e in excluded)]


def spec_text(spec):
    return "a section" if isinstance(spec, Section) else spec.describe()


# Shared declarations ---------------------------------------------------------------------------
def VALIDATION():
    """The class-disjoint validation split (``ZSLDataset.validation_split``)."""
    return Section(seed=Int(min=0), unseen_fraction=Float(min=0, max=1, min_open=True, max_open=True),
                   seen_test_fraction=Float(min=0, max=1, max_open=True))


def schedule_settings():
    """The optimiser, schedule, epoch and evaluation declarations, shared by the blocks below and by
    nested stage sections (e.g. CVC's ``transductive_training``)."""
    return {"lr": Float(min=0, min_open=True), "weight_decay": Float(min=0),
            "lr_step": Int(min=1), "lr_gamma": Float(min=0, max=1, min_open=True),
            "epochs": Int(min=1), "eval_every": Int(min=1)}


CLASSIFIER_INITS = ("xavier", "normal")  # the final classifiers' initial weights (zslfast.eval.classifier)
ZSL_OUTPUTS = ("unseen", "all")          # the ZSL classifier's outputs (zslfast.eval.generative)


def vaegan_settings():
    """TF-VAEGAN's training settings (:func:`zslfast.nn.vaegan.train_step`), shared by the ``gan``
    sections of TF-VAEGAN and SC-EGG (which adds its guidance weights)."""
    lr = Float(min=0, min_open=True)
    return {"hidden": Width(), "critic_iters": Int(min=1), "feedback_loops": Int(min=1, max=2),
            "lr": lr, "dec_lr": lr, "feed_lr": lr, "beta1": Float(min=0, max=1, max_open=True),
            "gamma_d": Float(min=0), "gamma_g": Float(min=0), "lambda_gp": Float(min=0, min_open=True),
            "recons_weight": Float(min=0), "a1": Float(min=0), "a2": Float(min=0), "freeze_dec": Bool(),
            "encoded_noise": Bool()}


def generative_settings():
    """The generative evaluation's settings (:func:`zslfast.eval.generative_evaluation`): the synthetic
    count per unseen class (or its ratio to the real count per seen class), the final classifiers and
    the calibration, shared by every feature-generating method."""
    return {"synth_per_class": Int(min=1, max=COUNT_MAX, nullable=True), "synth_ratio": Float(min=0, min_open=True, nullable=True),
            "classifier": Section(lr=Float(min=0, min_open=True), epochs=Int(min=1), batch_size=Int(min=1),
                                  init=Choice(*CLASSIFIER_INITS), zsl_outputs=Choice(*ZSL_OUTPUTS)),
            "calibration": Float()}


def GENERATIVE_CHECKS():
    """The checks of a generative method's settings: a synthetic budget is set, and the first
    evaluation is within the epochs."""
    return [lambda c: None if c["synth_per_class"] is not None or c["synth_ratio"] is not None else
            "synth_per_class and synth_ratio are both null; set one (the number of synthetic features per unseen "
            "class, or that number as a multiple of the mean real count per seen class)",
            lambda c: None if c["eval_start"] <= c["epochs"] else
            f"eval_start = {c['eval_start']} is after the last epoch ({c['epochs']}): nothing would be "
            "evaluated or selected"]


def FEATURE_NORM():
    """Feature normalisation, statistics from trainval only (``ZSLDataset.normalized``)."""
    return Choice(*NORMALIZATIONS)


def ATTRIBUTES():
    """Which class embedding a real xlsa17 dataset is read with (synthetic data has one)."""
    return Choice(*ATTRIBUTE_SOURCES)


def _blocks():
    d = schedule_settings()
    return {  # block: {name: (declaration, default)}; a method's own defaults then set its values
        "features": {"feature_norm": (FEATURE_NORM(), "none")},   # statistics from trainval only
        "attributes": {"attributes": (ATTRIBUTES(), "att")},      # real data: att | original_att | sent
        "optim": {"lr": (d["lr"], 1.0e-3), "weight_decay": (d["weight_decay"], 0.0)},
        # StepLR: the learning rate × lr_gamma every lr_step epochs
        "schedule": {"lr_step": (d["lr_step"], 1), "lr_gamma": (d["lr_gamma"], 1.0)},
        "epochs": {"epochs": (d["epochs"], 1)},
        "batches": {"batch_size": (Int(min=1), 64)},
        # evaluated after epoch e >= eval_start with e % eval_every == 0, and after the last
        "evaluation": {"eval_every": (d["eval_every"], 1), "eval_start": (Int(min=1), 1)},
        # the class-disjoint validation split of trainval (model selection)
        "validation": {"validation": (VALIDATION(), {"seed": 0, "unseen_fraction": 0.2, "seen_test_fraction": 0.2})},
        # continual tasks (zslfast.engine.continual): null: the original's for the dataset
        "continual": {"classes_per_task": (Int(min=1, nullable=True), None),
                      "num_tasks": (Int(min=2, nullable=True), None),
                      "split": (Section(test_size=Float(min=0, max=1, min_open=True, max_open=True), seed=Int(min=0)),
                                {"test_size": 0.2, "seed": 42}),
                      "buffer_size": (Int(min=0), 5000)},
    }


BLOCKS = _blocks()
"""Shared configuration blocks: one name for each concept several methods use. A method's
``Section(extends=(...))`` lists the blocks it holds; their defaults are the configuration's first
layer (:func:`zslfast.config.resolve_config`), which the method's own YAML ``defaults`` then set."""

ALIASES = {"lr_step_epochs": "lr_step", "step_size": "lr_step", "gamma": "lr_gamma",
           "eval_every_epochs": "eval_every", "eval_start_epoch": "eval_start"}
"""Names from before the shared blocks, still accepted by ``--config`` and ``--set``."""
