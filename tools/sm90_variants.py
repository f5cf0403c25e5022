"""What tools/ab_sm90.py and tools/trace_sm90.py share: the patterns they run, one layer's compressed operands, and
putting a sm_90a cubin of our own in place of the launch layer's Hopper module."""

from __future__ import annotations

import torch

from exporter import TVW, HiNM, select_masks
from exporter.formats import compress

PATTERNS = {"hinm128": (HiNM(vector=128), 0.75), "hinm64": (HiNM(vector=64), 0.75), "tvw128": (TVW(tile=128), 0.75),
            "hinm128_875": (HiNM(vector=128), 0.875), "hinm32": (HiNM(vector=32), 0.75)}   # hinm32: mma.sp only


def parse_patterns(parser, text: str) -> list[str]:
    """The comma-separated --patterns value; an unknown label is a usage error that names the known ones."""
    labels = text.split(",")
    unknown = sorted(set(labels) - set(PATTERNS))
    if unknown:
        parser.error(f"--patterns: unknown {unknown}; expected some of {sorted(PATTERNS)}")
    return labels


def compressed_op(w: torch.Tensor, label: str, device: str = "cuda") -> tuple:
    """W [N, K] pruned by PATTERNS[label] and compressed: the positional arguments of launch.tile_sparse_linear
    after x (no bias, no activation)."""
    pattern, sparsity = PATTERNS[label]
    lm = select_masks({"w": w.abs().float()}, pattern, sparsity)["w"]
    fmt = compress(w, lm.mask, lm.rows, lm.cols, two_four=True).to(device)
    return fmt.values, fmt.meta, fmt.k_index, fmt.k_offsets, fmt.row_index, None, w.shape[0], fmt.tile_rows, "none"


def load_modules(rt, paths: dict[str, str]) -> dict:
    """label -> pycuda module of each cubin, loaded in the runtime's (PyTorch's) context."""
    rt.context.push()
    try:
        return {label: rt.cuda.module_from_file(str(path)) for label, path in paths.items()}
    finally:
        rt.context.pop()


def use_module(rt, module, generic: bool = False, path=None) -> None:
    """The launch layer's wgmma kernels (generic: its mma.sp and other sm_80+ kernels) come from `module` from now on
    (prepared functions are looked up again); `path`, the module's cubin, gives the wgmma kernels' parameter list
    (cubins from before the tail split take fewer)."""
    from trt_plugins import launch

    if generic:
        rt.module = module
    else:
        rt.module90 = module
        if path is not None:
            rt.gemm90_args, rt.gemm90_split = launch._gemm90_arg_format(
                path, launch.sm90_kernel_name("float16", 128, "none"))
    rt.functions = {}
