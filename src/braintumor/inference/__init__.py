"""Analysis of scans with a trained model folder: ONNX Runtime on the CPU, no torch needed."""

from braintumor.inference.analyzer import Analyzer, Result
from braintumor.inference.classifier import Classifier, load_model
from braintumor.inference.segmenter import Segmenter

__all__ = ["Analyzer", "Classifier", "Result", "Segmenter", "load_model"]
