"""Reusable modules built on zslfast.ops."""
from zslfast.nn.cosine import CosineScorer, scaled_cosine
from zslfast.nn.flow import ConditionalFlow, ConditionalGLOWCoupling, ConditionedMLP
from zslfast.nn.functional import class_means
from zslfast.nn.mlp import MLP, init_linear

__all__ = ["ConditionalFlow", "ConditionalGLOWCoupling", "ConditionedMLP", "CosineScorer", "MLP", "class_means",
           "init_linear", "scaled_cosine"]
