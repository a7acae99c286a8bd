"""Evaluation: metrics, the scorer-based ZSL/GZSL and continual protocols, and the final softmax
classifier stage of generative methods (:mod:`zslfast.eval.generative`)."""
from zslfast.eval.classifier import SoftmaxClassifier, train_softmax_classifier
from zslfast.eval.generative import generative_evaluation, synthetic_budget
from zslfast.eval.metrics import (continual_summary, continual_task_metrics, harmonic_mean, per_class_accuracy,
                                  predict, zsl_gzsl_metrics)

__all__ = ["per_class_accuracy", "harmonic_mean", "predict", "zsl_gzsl_metrics", "continual_summary",
           "continual_task_metrics", "SoftmaxClassifier", "train_softmax_classifier", "generative_evaluation",
           "synthetic_budget"]
