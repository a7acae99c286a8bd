"""Reusable modules built on zslfast.ops."""
from zslfast.nn.flow import ConditionalFlow, ConditionalGLOWCoupling, ConditionedMLP

__all__ = ["ConditionalFlow", "ConditionalGLOWCoupling", "ConditionedMLP"]
