"""Per-method configuration as data: ``zslfast/configs/<method>.yaml``.

Layers, later ones winning: the file's ``defaults``, its ``datasets.<DATASET>`` section, its
``quick`` section (with ``--quick``), a user ``--config`` file (a flat or nested mapping of the same
keys), then ``--set key=value`` overrides (dotted keys for nested values; values parsed as YAML).
Unknown keys are refused, so a typo cannot silently do nothing.
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


def resolve_config(method, dataset, config_file=None, overrides=(), quick=False):
    """The full configuration of ``method`` on ``dataset`` (see the module docstring)."""
    path = os.path.join(CONFIG_DIR, f"{method}.yaml")
    spec = _load_yaml(path)
    config = copy.deepcopy(spec.get("defaults", {}))
    section = (spec.get("datasets") or {}).get(dataset)
    if section:
        _merge(config, copy.deepcopy(section), f"{path} (datasets.{dataset})")
    if quick and spec.get("quick"):
        _merge(config, copy.deepcopy(spec["quick"]), f"{path} (quick)")
    if config_file:
        _merge(config, _load_yaml(config_file), config_file)
    for item in overrides:
        _merge(config, parse_set(item), f"--set {item}")
    return config
