"""sparsetrt exporter: prune/permute PyTorch models into TW/TVW/HiNM sparsity, compress, export to ONNX."""

from .formats import FormatError, TileSparseWeight, compress
from .masks import LayerMask, select_masks
from .modules import SparseLinear
from .onnx_export import ExportError, export_onnx
from .patterns import NM, TVW, TW, Block, HiNM, Pattern, PatternError, Unstructured, pattern_from_spec
from .permute import ChannelSwap, Gyro, NoPermutation, PermutationReport, RandomRestarts, permute_model
from .sparsify import SparsifyReport, sparsify, sparsify_

__all__ = [
    "NM", "TVW", "TW", "Block", "ExportError", "FormatError", "HiNM", "LayerMask", "Pattern", "PatternError", "SparseLinear",
    "SparsifyReport", "TileSparseWeight", "Unstructured", "compress", "pattern_from_spec", "select_masks",
    "export_onnx", "sparsify", "sparsify_",
    "ChannelSwap", "Gyro", "NoPermutation", "PermutationReport", "RandomRestarts", "permute_model",
]
