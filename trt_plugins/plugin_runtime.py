"""The plugins' runtime function: what the TensorRT plugin's enqueue runs, callable without TensorRT.

TensorRT hands a plugin's enqueue device pointers of dense (LINEAR) tensors, their shapes and types,
and a raw cudaStream_t.  `enqueue` checks them against the node's attributes (`fields`) and launches our
kernel through `trt_plugins.launch`.  The JIT plugin (`trt_plugins.plugin`) only converts TensorRT's
tensor objects into `DeviceTensor`s, so the GPU tests exercise exactly this code with torch tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from . import fields


@dataclass(frozen=True)
class DeviceTensor:
    ptr: int                  # device address
    shape: tuple[int, ...]
    dtype: str                # 'float16', 'bfloat16', 'float32', 'int32'


def from_torch(t) -> DeviceTensor:
    """A contiguous CUDA torch tensor as TensorRT would pass it."""
    if not t.is_contiguous():
        raise ValueError("TensorRT passes dense (LINEAR) tensors; make the tensor contiguous first")
    return DeviceTensor(int(t.data_ptr()), tuple(int(d) for d in t.shape), str(t.dtype).removeprefix("torch."))


def enqueue(inputs: Sequence[DeviceTensor], output: DeviceTensor, attrs: fields.LayerAttrs, stream: int | None,
            device_index: int = 0):
    """Run y = act(xtᵀ · Wᵀ + b) for one plugin call: inputs in node order (xt [K, M], values, meta,
    k_index, k_offsets, row_index, bias), output y [M, N].  Returns the launch plan."""
    prob = fields.problem([t.shape for t in inputs], [t.dtype for t in (*inputs, output)], attrs)
    if tuple(output.shape) != (prob.M, prob.N):
        raise fields.FieldError(f"{attrs.op_type}: output 'y' has shape {tuple(output.shape)}, expected ({prob.M}, {prob.N})")
    fields.check_kernel_problem(attrs, prob.dtype)
    from . import launch  # pycuda and the kernels are needed only from here on

    xt, values, meta, k_index, k_offsets, row_index, bias = inputs
    return launch.enqueue(xt_ptr=xt.ptr, ldx=prob.ldx, values_ptr=values.ptr, meta_ptr=meta.ptr,
                          k_index_ptr=k_index.ptr, k_offsets_ptr=k_offsets.ptr, row_index_ptr=row_index.ptr,
                          bias_ptr=bias.ptr, y_ptr=output.ptr, M=prob.M, K=prob.K, N=prob.N,
                          tile_rows=prob.tile_rows, num_tiles=prob.num_tiles, dtype=prob.dtype,
                          activation=prob.activation, stream=stream, device_index=device_index,
                          kept_total=k_index.shape[0])
