"""Training small CNNs with CE / LS / MaxSup / logit penalty on real digits (demo and test checkpoints)."""
from repanalysis.train.losses import LOSSES, make_loss
from repanalysis.models.small_cnn import SmallCNN
from repanalysis.train.trainer import (DIGIT_NAMES, epoch_checkpoints, epoch_folder, make_demo_checkpoints,
                                       make_demo_data, mnist_digits, mnist_transform, save_checkpoint,
                                       train_checkpoint_series, train_small_cnn)

__all__ = ["LOSSES", "make_loss", "SmallCNN", "DIGIT_NAMES", "make_demo_checkpoints", "make_demo_data",
           "mnist_digits", "mnist_transform", "save_checkpoint", "train_small_cnn", "epoch_folder",
           "epoch_checkpoints", "train_checkpoint_series"]
