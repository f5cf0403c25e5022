"""Permutation search for tile-sparse patterns (HiNM, TVW, TW): gyro-permutation and its baselines.

    from exporter.permute import Gyro, permute_hinm, permute_model
    result = permute_hinm(weight.abs(), HiNM(vector=64), 0.75, Gyro(seed=0))
    result.retained, result.no_perm, result.layer_mask()      # → compress / SparseLinear
    report = permute_model(model, HiNM(64), 0.75, Gyro(), example_inputs=(x,))   # whole model, absorbed

See docs/PERMUTATION.md for the algorithm, cross-layer handling and benchmark numbers.
"""

from .config import ChannelSwap, Gyro, NoPermutation, PermutationConfig, RandomRestarts
from .layers import permute_hinm, permute_layer, permute_tvw, permute_tw
from .model import absorbable_pairs, apply_permuted, permute_model, permute_scores, sparse_module
from .result import PermutationReport, PermutationResult
from .saliency_accounting import gap_closed, layout_retained, mask_retained, unstructured_retained

__all__ = [
    "ChannelSwap", "Gyro", "NoPermutation", "PermutationConfig", "PermutationReport", "PermutationResult",
    "RandomRestarts", "absorbable_pairs", "apply_permuted", "gap_closed", "layout_retained", "mask_retained",
    "permute_hinm", "permute_layer", "permute_model", "permute_scores", "permute_tvw", "permute_tw",
    "sparse_module", "unstructured_retained",
]
