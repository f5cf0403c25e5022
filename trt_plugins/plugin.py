"""TensorRT plugins `sparsetrt::HiNMLinear` and `sparsetrt::TVWLinear` (tensorrt.plugin decorator API).

Imported only by `trt_plugins.register()`, i.e. when TensorRT ≥ 10.9 is importable.  Every decorated
function is a thin shell: shapes, types, attribute checks and launch arguments come from
`trt_plugins.fields`, the runtime launch from `trt_plugins.plugin_runtime` (JIT) or the compiled PTX
plus `trt_plugins.launch.plan` (AOT).  One plugin per op; both run the same kernel family.  TWLinear has
no plugin: TensorRT inlines its local function (our kernels need 2:4 tiles).

The decorator API reads each function's signature, so the parameter lists are spelled out: the seven
node inputs, then the node's INT attributes (the ONNX parser hands INT attributes over as int32 fields;
plugin_version/plugin_namespace are consumed by the parser to find us).
"""

# No `from __future__ import annotations`: tensorrt.plugin inspects the annotations as objects.
from typing import List, Tuple, Union  # noqa: UP035  (the decorator API compares against typing forms)

import tensorrt as trt
import tensorrt.plugin as trtp

from . import fields, plugin_runtime

_DTYPE_NAMES = {trt.float16: "float16", trt.bfloat16: "bfloat16", trt.float32: "float32", trt.int32: "int32"}
_REGISTERED: list[str] = []
_REGISTERED_IMPLS: list[str] = []


def dtype_name(dtype) -> str:
    return _DTYPE_NAMES.get(dtype, str(dtype))


def _attrs(op_type: str, out_features, in_features, tile_rows, num_tiles, activation, pattern_value):
    raw = {"out_features": out_features, "in_features": in_features, "tile_rows": tile_rows,
           "num_tiles": num_tiles, "activation": activation, fields.OPS[op_type].pattern_attr: pattern_value}
    return fields.parse_attributes(op_type, {k: int(v) for k, v in raw.items()})


def _describe(op_type: str, xt, attrs: fields.LayerAttrs):
    """Output descriptor; rejects (at network build time, with a clear message) what the kernel cannot run."""
    fields.check_kernel_problem(attrs, dtype_name(xt.dtype))
    return trtp.from_shape_expr(fields.output_shape(xt.shape_expr, attrs), dtype=xt.dtype)


def _autotune():
    return [trtp.AutoTuneCombination(fields.AUTOTUNE_TYPES, "LINEAR")]


def _run(op_type: str, tensors, attrs: fields.LayerAttrs, output, stream: int) -> None:
    inputs = [plugin_runtime.DeviceTensor(int(t.data_ptr), tuple(int(d) for d in t.shape), dtype_name(t.dtype))
              for t in tensors]
    out = plugin_runtime.DeviceTensor(int(output.data_ptr), tuple(int(d) for d in output.shape),
                                      dtype_name(output.dtype))
    import torch  # TensorRT runs enqueue on the current device, which the launch layer needs by index

    plugin_runtime.enqueue(inputs, out, attrs, stream, device_index=torch.cuda.current_device())


def _aot(xt, attrs: fields.LayerAttrs):
    """(kernel name, PTX, launch params, scalar args) for an engine that launches our kernel without Python."""
    from . import launch

    dtype = dtype_name(xt.dtype)
    fields.check_kernel_problem(attrs, dtype)
    p = launch.plan(1, attrs.in_features, attrs.out_features, attrs.tile_rows, attrs.num_tiles, dtype,
                    attrs.activation_name)
    ctas, tokens = fields.ctas_per_token_tile(attrs, dtype, launch.plan)
    ptx = launch.ptx_path().read_text()
    name = fields.aot_kernel_name(p.kernel_name)
    fields.check_aot_entry(ptx, name)
    params = trtp.KernelLaunchParams()
    params.grid_x = trtp.cdiv(xt.shape_expr[1], tokens) * ctas     # token tiles x CTAs per token tile
    params.block_x = p.block[0]
    params.shared_mem = launch.shared_bytes(p.cta_rows, low_smem=True)   # the _aot entries fit 48 KB
    scalars = trtp.SymIntExprs.from_tuple([trtp.SymInt32(e) for e in fields.aot_scalar_args(xt.shape_expr, attrs)])
    return name.encode(), ptx.encode(), params, scalars


# ---- HiNMLinear -------------------------------------------------------------------------------------
@trtp.register("sparsetrt::HiNMLinear")
def _hinm_desc(xt: trtp.TensorDesc, values: trtp.TensorDesc, meta: trtp.TensorDesc, k_index: trtp.TensorDesc,
               k_offsets: trtp.TensorDesc, row_index: trtp.TensorDesc, bias: trtp.TensorDesc, out_features: int,
               in_features: int, tile_rows: int, num_tiles: int, activation: int, vector: int) -> trtp.TensorDesc:
    return _describe("HiNMLinear", xt, _attrs("HiNMLinear", out_features, in_features, tile_rows, num_tiles,
                                              activation, vector))


@trtp.autotune("sparsetrt::HiNMLinear")
def _hinm_autotune(xt: trtp.TensorDesc, values: trtp.TensorDesc, meta: trtp.TensorDesc, k_index: trtp.TensorDesc,
                   k_offsets: trtp.TensorDesc, row_index: trtp.TensorDesc, bias: trtp.TensorDesc,
                   outputs: Tuple[trtp.TensorDesc]) -> List[trtp.AutoTuneCombination]:  # noqa: UP006
    return _autotune()


def _hinm_impl(xt: trtp.Tensor, values: trtp.Tensor, meta: trtp.Tensor, k_index: trtp.Tensor,
               k_offsets: trtp.Tensor, row_index: trtp.Tensor, bias: trtp.Tensor, out_features: int,
               in_features: int, tile_rows: int, num_tiles: int, activation: int, vector: int,
               outputs: Tuple[trtp.Tensor], stream: int) -> None:  # noqa: UP006
    attrs = _attrs("HiNMLinear", out_features, in_features, tile_rows, num_tiles, activation, vector)
    _run("HiNMLinear", (xt, values, meta, k_index, k_offsets, row_index, bias), attrs, outputs[0], stream)


def _hinm_aot(xt: trtp.TensorDesc, values: trtp.TensorDesc, meta: trtp.TensorDesc, k_index: trtp.TensorDesc,
              k_offsets: trtp.TensorDesc, row_index: trtp.TensorDesc, bias: trtp.TensorDesc, out_features: int,
              in_features: int, tile_rows: int, num_tiles: int, activation: int, vector: int,
              outputs: Tuple[trtp.TensorDesc], tactic: int  # noqa: UP006
              ) -> Tuple[Union[str, bytes], Union[str, bytes], trtp.KernelLaunchParams, trtp.SymExprs]:  # noqa: UP006, UP007
    return _aot(xt, _attrs("HiNMLinear", out_features, in_features, tile_rows, num_tiles, activation, vector))


# ---- TVWLinear --------------------------------------------------------------------------------------
@trtp.register("sparsetrt::TVWLinear")
def _tvw_desc(xt: trtp.TensorDesc, values: trtp.TensorDesc, meta: trtp.TensorDesc, k_index: trtp.TensorDesc,
              k_offsets: trtp.TensorDesc, row_index: trtp.TensorDesc, bias: trtp.TensorDesc, out_features: int,
              in_features: int, tile_rows: int, num_tiles: int, activation: int, tile: int) -> trtp.TensorDesc:
    return _describe("TVWLinear", xt, _attrs("TVWLinear", out_features, in_features, tile_rows, num_tiles,
                                             activation, tile))


@trtp.autotune("sparsetrt::TVWLinear")
def _tvw_autotune(xt: trtp.TensorDesc, values: trtp.TensorDesc, meta: trtp.TensorDesc, k_index: trtp.TensorDesc,
                  k_offsets: trtp.TensorDesc, row_index: trtp.TensorDesc, bias: trtp.TensorDesc,
                  outputs: Tuple[trtp.TensorDesc]) -> List[trtp.AutoTuneCombination]:  # noqa: UP006
    return _autotune()


def _tvw_impl(xt: trtp.Tensor, values: trtp.Tensor, meta: trtp.Tensor, k_index: trtp.Tensor,
              k_offsets: trtp.Tensor, row_index: trtp.Tensor, bias: trtp.Tensor, out_features: int,
              in_features: int, tile_rows: int, num_tiles: int, activation: int, tile: int,
              outputs: Tuple[trtp.Tensor], stream: int) -> None:  # noqa: UP006
    attrs = _attrs("TVWLinear", out_features, in_features, tile_rows, num_tiles, activation, tile)
    _run("TVWLinear", (xt, values, meta, k_index, k_offsets, row_index, bias), attrs, outputs[0], stream)


def _tvw_aot(xt: trtp.TensorDesc, values: trtp.TensorDesc, meta: trtp.TensorDesc, k_index: trtp.TensorDesc,
             k_offsets: trtp.TensorDesc, row_index: trtp.TensorDesc, bias: trtp.TensorDesc, out_features: int,
             in_features: int, tile_rows: int, num_tiles: int, activation: int, tile: int,
             outputs: Tuple[trtp.TensorDesc], tactic: int  # noqa: UP006
             ) -> Tuple[Union[str, bytes], Union[str, bytes], trtp.KernelLaunchParams, trtp.SymExprs]:  # noqa: UP006, UP007
    return _aot(xt, _attrs("TVWLinear", out_features, in_features, tile_rows, num_tiles, activation, tile))


_IMPLS = {"HiNMLinear": (_hinm_impl, _hinm_aot), "TVWLinear": (_tvw_impl, _tvw_aot)}


def register_all(impls: tuple[str, ...] = ("jit", "aot")) -> list[str]:
    """Attach the implementations: `jit` (trtp.impl, Python launch through pycuda) and/or `aot`
    (trtp.aot_impl, our PTX embedded in the engine).  With both, the network must say which one it wants
    (NetworkDefinitionCreationFlag.PREFER_AOT/JIT_PYTHON_PLUGINS, set by trt_plugins.build); tools that
    create networks without those flags (Polygraphy) register one.  Once per process."""
    unknown = set(impls) - {"jit", "aot"}
    if unknown or not impls:
        raise ValueError(f"impls must be a non-empty subset of ('jit', 'aot'), got {impls}")
    if _REGISTERED:
        if set(impls) != set(_REGISTERED_IMPLS):
            raise RuntimeError(f"the plugins are already registered with {sorted(_REGISTERED_IMPLS)} in this process")
        return list(_REGISTERED)
    for op_type, (jit, aot) in _IMPLS.items():
        plugin_id = fields.OPS[op_type].plugin_id
        if "jit" in impls:
            trtp.impl(plugin_id)(jit)
        if "aot" in impls:
            trtp.aot_impl(plugin_id)(aot)
        _REGISTERED.append(plugin_id)
    _REGISTERED_IMPLS.extend(impls)
    return list(_REGISTERED)
