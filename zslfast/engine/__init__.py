"""The engine every method runs on: the method contract and registry, the run context with its named
random streams, the training loop, the samplers, model selection and the continual protocol.

A method file (``zslfast/models/<name>.py``) holds networks, losses, step functions and a short
recipe; everything about *when* things happen (epochs, batches, schedules, evaluation cadence,
selection, seeds, callbacks) lives here. See DESIGN.md "The engine".
"""
from zslfast.engine.context import RunContext
from zslfast.engine.method import Method, MethodResult
from zslfast.engine.registry import METHODS, get_method, method_class

__all__ = ["METHODS", "Method", "MethodResult", "RunContext", "get_method", "method_class"]
