"""The data side of the runtime: DeepLab's ImageSegData, dataset layouts, the synthetic set.

``pipeline_for(net, phase, data)`` turns a compiled net's data layer (an ``ImageSegData``
layer, or ``inputs:`` plus a solver ``data:`` section) into a DataLoader whose batches
feed the net's placeholders; see :mod:`.spec` for the contract.
"""
from .dataset import DataPipeline, ImageSegDataset, pipeline_for, read_image, read_label
from .errors import DataError
from .spec import CAFFE_MEAN_BGR, DataSpec, resolve_spec

__all__ = ["pipeline_for", "DataPipeline", "ImageSegDataset", "DataSpec", "DataError", "resolve_spec",
           "read_image", "read_label", "CAFFE_MEAN_BGR"]
