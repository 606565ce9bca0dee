"""Analysis of scans with a trained model folder: ONNX Runtime on the CPU, no torch needed."""

from braintumor.inference.analyzer import Analyzer
from braintumor.inference.results import Analysis, Classification, Failure, Result, Segmentation

__all__ = ["Analysis", "Analyzer", "Classification", "Failure", "Result", "Segmentation"]
