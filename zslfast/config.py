"""Per-method configuration as data: ``zslfast/configs/<method>.yaml``.

Layers, later ones winning:

0. the shared base (``configs/_base.yaml``): the values of the blocks the file ``extends``, one name
   per shared concept (optimiser, schedule, epochs, evaluation cadence, validation split);
1. the file's ``defaults``;
2. the dataset layer: ``datasets.<DATASET>`` for a real dataset or for the built-in synthetic data
   (``datasets.synthetic``). Synthetic data shaped like a real dataset (``--like NAME``) takes
   NAME's own section ``datasets.NAME`` (its hyper-parameters) followed by the file's
   ``like_budget`` section, which scales the budget (epochs, widths, sample counts) to a CPU, and
   then by ``like_budget.datasets.NAME`` where the file has one: the budget of one dataset, for
   values that must differ from the common budget on that data (each says why in the YAML);
3. the ``quick`` section (with ``--quick``);
4. a user ``--config`` file (a flat or nested mapping of the same keys);
5. ``--set key=value`` overrides (dotted keys for nested values; values parsed as YAML).

Names from before the shared base (``lr_step_epochs``, ``step_size``, ``gamma``,
``eval_every_epochs``, ``eval_start_epoch``) are still accepted in layers 4 and 5 (the base's
``aliases``). Unknown keys are refused, so a typo cannot silently do nothing, and the resolved configuration is
checked against the method's declared settings (:mod:`zslfast.settings`): a wrong type or an
out-of-range value is one clear error before any data is loaded.
"""
import copy
import os

import yaml

from zslfast.errors import ZSLError

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


def _load_yaml(path):
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise ZSLError(f"{path}: config file not found") from None
    except yaml.YAMLError as exc:
        raise ZSLError(f"{path}: invalid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ZSLError(f"{path}: a config file must hold a mapping of settings")
    return data


def _base():
    return _load_yaml(os.path.join(CONFIG_DIR, "_base.yaml"))


def base_blocks():
    """{block name: [the shared names it holds]} of ``configs/_base.yaml``."""
    return {name: list(values) for name, values in _base()["blocks"].items()}


def _aliased(update, aliases):
    """``update`` with old names replaced by their shared names, at every level."""
    return {aliases.get(k, k): (_aliased(v, aliases) if isinstance(v, dict) else v) for k, v in update.items()}


def _merge(base, update, where, path=()):
    for key, value in update.items():
        if key not in base:
            known = ", ".join(sorted(base))
            raise ZSLError(f"{where}: unknown setting '{'.'.join(path + (key,))}' (known: {known})")
        if isinstance(base[key], dict) and isinstance(value, dict):
            _merge(base[key], value, where, path + (key,))
        else:
            base[key] = value


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
    datasets = spec.get("datasets") or {}
    if dataset == "synthetic" and like_name is not None:
        budget = dict(spec.get("like_budget") or {})
        per_dataset = budget.pop("datasets", None) or {}
        return [(f"datasets.{like_name}", datasets.get(like_name) or {}), ("like_budget", budget),
                (f"like_budget.datasets.{like_name}", per_dataset.get(like_name) or {})]
    return [(f"datasets.{dataset}", datasets.get(dataset) or {})]


def resolve_config(method, dataset="synthetic", config_file=None, overrides=(), quick=False, like=None,
                   validate=True):
    """The full configuration of ``method`` on ``dataset`` (see the module docstring).

    ``like`` is the ``--like`` argument of synthetic runs (a dataset name, or an att_splits.mat
    path whose folder is named after its dataset). With ``validate`` the result is checked against
    the method's declared settings and returned normalised.
    """
    path = os.path.join(CONFIG_DIR, f"{method}.yaml")
    spec = _load_yaml(path)
    base = _base()
    config = {}
    for block in spec.get("extends", []):
        if block not in base["blocks"]:
            raise ZSLError(f"{path}: extends unknown block {block!r} (known: {', '.join(sorted(base['blocks']))})")
        config.update(copy.deepcopy(base["blocks"][block]))
    for key, value in copy.deepcopy(spec.get("defaults", {})).items():  # the method's values and own keys
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            _merge(config[key], value, f"{path} (defaults)", (key,))
        else:
            config[key] = value
    aliases = base.get("aliases", {})
    like_name = None
    if like is not None and dataset == "synthetic":
        from zslfast.data.synthetic import like_dataset_name

        like_name = like_dataset_name(like)
    for label, section in dataset_layers(spec, dataset, like_name):
        if section:
            _merge(config, copy.deepcopy(section), f"{path} ({label})")
    if quick and spec.get("quick"):
        _merge(config, copy.deepcopy(spec["quick"]), f"{path} (quick)")
    if config_file:
        _merge(config, _aliased(_load_yaml(config_file), aliases), config_file)
    for item in overrides:
        _merge(config, _aliased(parse_set(item), aliases), f"--set {item}")
    if validate:
        from zslfast.engine.registry import method_class

        config = method_class(method).settings.validate(config)
    return config
