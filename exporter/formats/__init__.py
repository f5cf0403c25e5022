"""Compressed weight formats.  `tilesparse` owns the one format that the reference path, the CUDA
kernels, the ONNX export and the TensorRT plugins all consume."""

from .tilesparse import FormatError, TileSparseWeight, compress, load, save

__all__ = ["FormatError", "TileSparseWeight", "compress", "load", "save"]
