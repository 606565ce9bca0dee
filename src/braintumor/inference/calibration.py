"""Calibrated confidence and the out-of-distribution score, applied at inference (numpy only).

Both are fitted by ``braintumor calibrate`` on patients the model did not train on and shipped in the model
folder: a temperature in the card, and a Gaussian model of the training images' pooled encoder features in
``ood.safetensors`` (checksummed like the weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Softmax of log-probabilities / T (the same as dividing the logits by T): T > 1 softens over-confidence."""
    logits = np.log(np.clip(probs, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=-1, keepdims=True)
    out = np.exp(logits)
    softened: np.ndarray = out / out.sum(axis=-1, keepdims=True)
    return softened


@dataclass(frozen=True)
class FeatureModel:
    """Class-conditional Mahalanobis distance (one mean per class, a shared covariance, as in Lee et al. 2018) in
    the top principal components of the training images' standardised pooled features."""

    means: np.ndarray  # (C, F) class means of the standardised features
    center: np.ndarray  # (F,) feature mean used for standardising
    scale: np.ndarray  # (F,) feature standard deviation
    components: np.ndarray  # (K, F) principal axes of the within-class residuals
    variances: np.ndarray  # (K,)

    def score(self, features: np.ndarray) -> np.ndarray:
        """Root mean squared whitened distance to the nearest class mean: about 1 for typical training images."""
        z = (np.asarray(features, np.float64) - self.center) / self.scale
        projected = (z[:, None, :] - self.means[None]) @ self.components.T  # (N, C, K)
        distance: np.ndarray = np.sqrt((projected**2 / self.variances).mean(axis=-1)).min(axis=1)
        return distance

    def tensors(self) -> dict[str, np.ndarray]:
        return {
            "means": self.means,
            "center": self.center,
            "scale": self.scale,
            "components": self.components,
            "variances": self.variances,
        }

    @classmethod
    def load(cls, path: str | Path) -> FeatureModel:
        from safetensors.numpy import load_file

        t = {k: v.astype(np.float64) for k, v in load_file(str(path)).items()}
        return cls(t["means"], t["center"], t["scale"], t["components"], t["variances"])
