"""Analysis of scans with a trained model folder: ONNX Runtime on the CPU, no torch needed."""

from braintumor.inference.analyzer import Analyzer, Result

__all__ = ["Analyzer", "Result"]
