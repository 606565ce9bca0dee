"""Training with Lightning + MONAI: cached slices, augmented training data only, safetensors runs."""
