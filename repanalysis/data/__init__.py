"""Data sets, transforms, ImageNet metadata and class names."""
from repanalysis.data.datasets import ImageDataset, open_dataset
from repanalysis.data.transforms import EvalTransform

__all__ = ["ImageDataset", "open_dataset", "EvalTransform"]
