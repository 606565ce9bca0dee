"""Datasets: manifests of three layouts read into one table, and patient-level splits."""

from braintumor.data.manifest import Record, load_mask, load_record, normalise_class, read_manifest, write_manifest
from braintumor.data.splits import check_no_leakage, patient_kfold, train_val_test_split

__all__ = [
    "Record",
    "check_no_leakage",
    "load_mask",
    "load_record",
    "normalise_class",
    "patient_kfold",
    "read_manifest",
    "train_val_test_split",
    "write_manifest",
]
