"""The configuration system: per-method configuration as data (``zslfast/config/methods/<method>.yaml``),
the shared blocks and setting types (:mod:`zslfast.config.settings`), and their resolution here.

Layers, later ones winning:

0. the defaults of the shared blocks the method's settings extend (:data:`zslfast.config.settings.BLOCKS`),
   one name per shared concept (optimiser, schedule, epochs, evaluation cadence, validation split);
1. the file's ``defaults``;
2. the dataset layer: ``datasets.<DATASET>`` for a benchmark (the papers' per-dataset values).
   Synthetic data, built in or shaped like a real dataset (``--like NAME``), runs on a CPU budget:
   NAME's own section ``datasets.NAME`` first (its hyper-parameters; none for the built-in data),
   then the file's one ``cpu_budget`` section, which scales the budget (epochs, widths, sample
   counts) to a CPU, then ``cpu_budget.datasets.NAME`` (``cpu_budget.datasets.synthetic`` for the
   built-in data) where the file has one: values that must differ from the common budget on that
   data (each says why in the YAML). The user's own data (any other ``--dataset`` name: no preset)
   gets ``cpu_budget`` alone, whose synthetic sample counts are multiples of the data's real
   per-class counts (``synth_ratio``), so a 600-image dataset gets a 600-image budget;
3. the ``quick`` section (with ``--quick``);
4. a user ``--config`` file (a flat or nested mapping of the same keys);
5. ``--set key=value`` overrides (dotted keys for nested values; values parsed as YAML).

Names from before the shared blocks (``lr_step_epochs``, ``step_size``, ``gamma``,
``eval_every_epochs``, ``eval_start_epoch``) are still accepted in layers 4 and 5
(:data:`zslfast.config.settings.ALIASES`). Unknown keys are refused, so a typo cannot silently do nothing, and the resolved configuration is
checked against the method's declared settings (:mod:`zslfast.config.settings`): a wrong type or an
out-of-range value is one clear error before any data is loaded.

Every resolved value knows where it came from: ``resolve_config(..., sources={})`` fills the dict
with ``{dotted key: "file:line (layer)"}``, which ``python -m zslfast.train ... --print-config``
prints beside each value.
"""
import copy
import os

import yaml

from zslfast.errors import ZSLError
from zslfast.config.settings import ALIASES, BLOCKS

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "methods")


SECTIONS = ("defaults", "datasets", "cpu_budget", "quick")  # the top-level keys of a method's file


def _load_yaml(path, lines=None):
    """The mapping in ``path``; with ``lines`` (a dict), also {key path tuple: 1-based line}."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        data = yaml.safe_load(text) or {}
    except FileNotFoundError:
        raise ZSLError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ZSLError(f"{path}: is a folder; --config takes a YAML file") from None
    except UnicodeDecodeError as exc:
        raise ZSLError(f"{path}: not a UTF-8 text file (byte {exc.start}); --config takes a YAML file") from None
    except OSError as exc:
        raise ZSLError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:  # PyYAML's message spans several lines: the problem and where, on one
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ZSLError(f"{path}: invalid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise ZSLError(f"{path}: a config file must hold a mapping of settings")
    if lines is not None:
        _key_lines(yaml.compose(text), (), lines)
    return data


def _key_lines(node, path, out):
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            here = path + (key.value,)
            out[here] = key.start_mark.line + 1
            _key_lines(value, here, out)


def _aliased(update, aliases):
    """``update`` with old names replaced by their shared names, at every level."""
    return {aliases.get(k, k): (_aliased(v, aliases) if isinstance(v, dict) else v) for k, v in update.items()}


class _Layer:
    """Where one layer's values come from: a label, and the file and key path that locate its lines."""

    def __init__(self, label, file=None, prefix=(), lines=None):
        self.label, self.file, self.prefix, self.lines = label, file, prefix, lines or {}

    def __str__(self):
        return f"{self.file} ({self.label})" if self.file else self.label

    def at(self, path):
        line = self.lines.get(self.prefix + path)
        if self.file is None:
            return self.label
        return f"{_shown_path(self.file)}:{line} ({self.label})" if line else f"{_shown_path(self.file)} ({self.label})"


def _shown_path(path):
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # zslfast/
    full = os.path.abspath(path)
    return os.path.relpath(full, os.path.dirname(package)) if full.startswith(package + os.sep) else path


def _merge(base, update, layer, path=(), sources=None):
    for key, value in update.items():
        here = path + (key,)
        if key not in base:
            known = ", ".join(sorted(base))
            raise ZSLError(f"{layer}: unknown setting '{'.'.join(here)}' (known: {known})")
        if isinstance(base[key], dict) and isinstance(value, dict):
            _merge(base[key], value, layer, here, sources)
        else:
            base[key] = value
            if sources is not None:
                _record(sources, here, value, layer)


def _record(sources, path, value, layer):
    """Mark ``path`` (and every leaf under it, when ``value`` is a mapping) as set by ``layer``."""
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _record(sources, path + (k,), v, layer)
    else:
        sources[".".join(path)] = layer.at(path)


def parse_set(item):
    """'a.b=value' -> {'a': {'b': parsed value}}."""
    if "=" not in item:
        raise ZSLError(f"--set {item!r}: expected key=value")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):
        try:  # YAML 1.1 reads "3e-4" (no dot) as a string; a number is meant
            value = float(value)
        except ValueError:
            pass
    out = value
    for part in reversed(key.strip().split(".")):
        out = {part: out}
    return out


def dataset_layers(spec, dataset, like_name=None):
    """The dataset layer's sections as (label, mapping) pairs (see the module docstring)."""
    from zslfast.data.xlsa17 import DATASETS

    datasets = spec.get("datasets") or {}
    if dataset in DATASETS:
        return [(f"datasets.{dataset}", datasets.get(dataset) or {})]
    budget = dict(spec.get("cpu_budget") or {})
    per_dataset = budget.pop("datasets", None) or {}
    if dataset != "synthetic":  # the user's own data: no preset, so the budget that follows the data's size
        return [("cpu_budget", budget)]
    name = like_name or "synthetic"
    own = [(f"datasets.{like_name}", datasets.get(like_name) or {})] if like_name else []
    return own + [("cpu_budget", budget), (f"cpu_budget.datasets.{name}", per_dataset.get(name) or {})]


def resolve_config(method, dataset="synthetic", config_file=None, overrides=(), quick=False, like=None,
                   validate=True, sources=None):
    """The full configuration of ``method`` on ``dataset`` (see the module docstring).

    ``like`` is the ``--like`` argument of synthetic runs (a dataset name, or an att_splits.mat
    path whose folder is named after its dataset). With ``validate`` the result is checked against
    the method's declared settings and returned normalised. ``sources``, a dict, receives
    ``{dotted key: where its value was set}`` for every leaf.
    """
    from zslfast.engine.registry import method_class

    schema = method_class(method).settings
    path = os.path.join(CONFIG_DIR, f"{method}.yaml")
    lines = {}
    spec = _load_yaml(path, lines)
    unknown = sorted(set(spec) - set(SECTIONS))
    if unknown:
        raise ZSLError(f"{path}: unknown top-level key {unknown[0]!r} (a method's file holds {', '.join(SECTIONS)})")
    config = schema.block_defaults()
    if sources is not None:
        for block in schema.extends:
            for name in BLOCKS[block]:
                _record(sources, (name,), config[name], _Layer(f"shared block {block!r}, zslfast/config/settings.py"))
    defaults = _Layer("defaults", path, ("defaults",), lines)
    for key, value in copy.deepcopy(spec.get("defaults", {})).items():  # the method's values and own keys
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            _merge(config[key], value, defaults, (key,), sources)
        else:
            config[key] = value
            if sources is not None:
                _record(sources, (key,), value, defaults)
    like_name = None
    if like is not None and dataset == "synthetic":
        from zslfast.data.synthetic import like_dataset_name

        like_name = like_dataset_name(like)
    for label, section in dataset_layers(spec, dataset, like_name):
        if section:
            _merge(config, copy.deepcopy(section), _Layer(label, path, tuple(label.split(".")), lines), sources=sources)
    if quick and spec.get("quick"):
        _merge(config, copy.deepcopy(spec["quick"]), _Layer("quick", path, ("quick",), lines), sources=sources)
    if config_file:
        user_lines = {}
        user = _load_yaml(config_file, user_lines)
        aliased_lines = {tuple(ALIASES.get(k, k) for k in key): n for key, n in user_lines.items()}
        _merge(config, _aliased(user, ALIASES), _Layer("--config", config_file, (), aliased_lines), sources=sources)
    for item in overrides:
        _merge(config, _aliased(parse_set(item), ALIASES), _Layer(f"--set {item}"), sources=sources)
    if validate:
        config = schema.validate(config)
    return config


def annotated_yaml(config, sources, indent=0):
    """``config`` as YAML text with each leaf's source (``sources[dotted key]``) as a trailing comment."""
    out = []
    _annotate(config, sources, (), indent, out)
    return "\n".join(out) + "\n"


def _annotate(mapping, sources, path, indent, out):
    for key, value in mapping.items():
        here = path + (key,)
        pad = " " * indent
        if isinstance(value, dict) and value:
            out.append(f"{pad}{key}:")
            _annotate(value, sources, here, indent + 2, out)
        else:
            text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
            text = text[:-3].strip() if text.endswith("...") else text
            source = sources.get(".".join(here))
            out.append(f"{pad}{key}: {text}" + (f"  # {source}" if source else ""))
