"""Reading scans: ``load_scan`` picks a reader by file type through one registry."""

from braintumor.errors import ScanError
from braintumor.imageio.registry import SUPPORTED_SUFFIXES, load_scan
from braintumor.imageio.scan import Scan, as_spacing

__all__ = ["SUPPORTED_SUFFIXES", "Scan", "ScanError", "as_spacing", "load_scan"]
