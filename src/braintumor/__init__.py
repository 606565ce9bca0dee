"""braintumor: tumor type, outline and area (cm²) of brain MRI slices.

Pipeline stages are the sub-packages: imageio → data → preprocessing → models → training →
evaluation → inference → app.  Research and education only; not a medical device.
"""

__version__ = "0.1.0"

CLASSES = ("glioma", "meningioma", "pituitary", "notumor")
TUMOR_CLASSES = CLASSES[:3]
