"""The method registry: an explicit table from method name to the class that implements it.

The table is data (``module:Class`` paths), not registration by import side effect, and this module
imports no method: :func:`get_method` imports the one asked for, so the engine never imports
``zslfast.models`` at import time and a method module may import the engine freely (no cycle). A new
method is one row here plus its module and its ``zslfast/config/methods/<name>.yaml``.
"""
import importlib

from zslfast.engine.method import Method, check_contract
from zslfast.errors import ZSLError

METHODS = {
    "eszsl": "zslfast.models.eszsl:ESZSL",
    "gsmflow": "zslfast.models.gsmflow:GSMFlow",
    "grw": "zslfast.models.grw:GRW",
    "cvc": "zslfast.models.cvc:CVC",
    "scegg": "zslfast.models.scegg:SCEGG",
    "tfvaegan": "zslfast.models.tfvaegan:TFVAEGAN",
    "clswgan": "zslfast.models.clswgan:CLSWGAN",
}


def method_class(name):
    """The class registered as ``name``, checked against the :class:`~zslfast.engine.method.Method`
    contract (a subclass with a matching ``name`` and no abstract member left)."""
    if name not in METHODS:
        raise ZSLError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}")
    module, cls_name = METHODS[name].split(":")
    cls = getattr(importlib.import_module(module), cls_name)
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise TypeError(f"{METHODS[name]} is not a zslfast.engine.Method subclass")
    check_contract(cls, name)
    return cls


def get_method(name):
    """A new instance of the method registered as ``name``."""
    return method_class(name)()
