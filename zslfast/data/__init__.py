"""Datasets: the xlsa17 and EPGN readers, region features (SC-EGG's HDF5), synthetic data, continual-task
splits. The region modules import h5py only when a file is read or written."""
from zslfast.data.continual import ContinualSplit, ReplayBuffer
from zslfast.data.dataset import ZSLDataset
from zslfast.data.epgn import load_epgn
from zslfast.data.regions import RegionDataset, RegionFeatures, load_regions, read_region_hdf5, write_region_hdf5
from zslfast.data.synthetic import make_synthetic, write_xlsa17
from zslfast.data.synthetic_regions import make_synthetic_regions
from zslfast.data.xlsa17 import DATASETS, load_xlsa17, read_att_splits, read_xlsa17_folder

__all__ = ["ZSLDataset", "load_xlsa17", "read_xlsa17_folder", "read_att_splits", "load_epgn", "make_synthetic",
           "write_xlsa17", "ContinualSplit", "ReplayBuffer", "DATASETS", "RegionDataset", "RegionFeatures",
           "load_regions", "read_region_hdf5", "write_region_hdf5", "make_synthetic_regions"]
