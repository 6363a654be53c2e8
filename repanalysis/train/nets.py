"""The demo's network (defined with the other architectures in :mod:`repanalysis.models.small_cnn`)."""
from repanalysis.models.small_cnn import SmallCNN  # noqa: F401  (re-exported)
