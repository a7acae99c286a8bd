"""Datasets: the xlsa17 and EPGN readers, synthetic data, continual-task splits."""
from zslfast.data.continual import ContinualSplit, ReplayBuffer
from zslfast.data.dataset import ZSLDataset
from zslfast.data.epgn import load_epgn
from zslfast.data.synthetic import make_synthetic, write_xlsa17
from zslfast.data.xlsa17 import DATASETS, load_xlsa17, read_att_splits, read_xlsa17_folder

__all__ = ["ZSLDataset", "load_xlsa17", "read_xlsa17_folder", "read_att_splits", "load_epgn", "make_synthetic",
           "write_xlsa17", "ContinualSplit", "ReplayBuffer", "DATASETS"]
