"""Evaluation: metrics and the final softmax classifier of generative methods."""
from zslfast.eval.classifier import SoftmaxClassifier, train_softmax_classifier
from zslfast.eval.metrics import continual_summary, harmonic_mean, per_class_accuracy, predict, zsl_gzsl_metrics

__all__ = ["per_class_accuracy", "harmonic_mean", "predict", "zsl_gzsl_metrics", "continual_summary",
           "SoftmaxClassifier", "train_softmax_classifier"]
