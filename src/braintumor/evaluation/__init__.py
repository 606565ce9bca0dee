"""Evaluating a model on a manifest: metrics, per-patient aggregation, reports."""
