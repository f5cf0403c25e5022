"""What a sparsetrt custom node / plugin is, as plain data and functions (no TensorRT, no GPU).

One node per sparse layer, shared by the ONNX exporter, the ONNX checks, the TensorRT plugins and their
tests:

    sparsetrt::<OpType>(xt [K, M], values, meta, k_index, k_offsets, row_index, bias [N]) -> y [M, N]

`xt` is the activation feature-major (a standard Transpose before the node; our kernel gathers whole
token runs of a kept input feature).  The other inputs are the TileSparse tensors (docs/FORMAT.md) as
initializers; bias is always present (zeros when the layer has none) so the kernel signature is fixed.
The TensorRT plugin layer (`trt_plugins.plugin`) is a thin shell over the functions here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

DOMAIN = "sparsetrt"            # ONNX domain of the custom nodes
DOMAIN_VERSION = 1              # its opset version
NAMESPACE = "sparsetrt"         # TensorRT plugin namespace (node attribute plugin_namespace)
PLUGIN_VERSION = "1"            # node attribute plugin_version
INPUTS = ("xt", "values", "meta", "k_index", "k_offsets", "row_index", "bias")
OUTPUTS = ("y",)
INT32_INPUTS = ("meta", "k_index", "k_offsets", "row_index")
ACTIVATIONS = {"none": 0, "relu": 1, "gelu": 2}      # must equal trt_plugins.launch.ACTIVATIONS
INT32_MAX = 2**31 - 1
ROW_GROUP = 16                  # tile rows: a multiple of the mma M (the format's rule)
KERNEL_ROW_GROUP = 32           # the kernels split tiles into CTAs of 32/64/128 rows
K_STEP = 32
KERNEL_DTYPES = ("float16", "bfloat16")
MODEL_DTYPES = ("float32", "float16", "bfloat16")


class FieldError(ValueError):
    """A node/plugin whose attributes, shapes or types are not what the op expects; names the culprit."""


@dataclass(frozen=True)
class OpSpec:
    op_type: str
    two_four: bool               # 2:4 tiles with metadata (else dense TW tiles)
    pattern_attr: str            # the pattern's own parameter, equal to tile_rows
    has_plugin: bool             # a TensorRT plugin runs it (TW: only the local function)
    pattern: str                 # human name

    @property
    def plugin_id(self) -> str:
        return f"{NAMESPACE}::{self.op_type}"


OPS: dict[str, OpSpec] = {
    "HiNMLinear": OpSpec("HiNMLinear", True, "vector", True, "HiNM (and plain 2:4)"),
    "TVWLinear": OpSpec("TVWLinear", True, "tile", True, "TVW"),
    "TWLinear": OpSpec("TWLinear", False, "tile", False, "TW (dense tiles)"),
}
BASE_INT_ATTRS = ("out_features", "in_features", "tile_rows", "num_tiles", "activation")


def op_spec(op_type: str) -> OpSpec:
    if op_type not in OPS:
        raise FieldError(f"op '{op_type}' is not a sparsetrt op; expected one of {sorted(OPS)}")
    return OPS[op_type]


def int_attribute_names(op_type: str) -> tuple[str, ...]:
    return (*BASE_INT_ATTRS, op_spec(op_type).pattern_attr)


@dataclass(frozen=True)
class LayerAttrs:
    """The attributes of one node, checked.  `activation` is the int code (ACTIVATIONS)."""

    op_type: str
    out_features: int
    in_features: int
    tile_rows: int
    num_tiles: int
    activation: int

    @property
    def spec(self) -> OpSpec:
        return OPS[self.op_type]

    @property
    def activation_name(self) -> str:
        return {v: k for k, v in ACTIVATIONS.items()}[self.activation]

    def to_onnx(self) -> dict[str, int | str]:
        """Node attributes, in a stable order: the ints, then what the TensorRT parser reads."""
        ints = {name: getattr(self, name) for name in BASE_INT_ATTRS}
        ints[self.spec.pattern_attr] = self.tile_rows
        return {**ints, "plugin_version": PLUGIN_VERSION, "plugin_namespace": NAMESPACE}


def make_attrs(op_type: str, *, out_features: int, in_features: int, tile_rows: int, num_tiles: int,
               activation: str | int, where: str = "") -> LayerAttrs:
    act = ACTIVATIONS.get(activation, -1) if isinstance(activation, str) else activation
    attrs = {"out_features": out_features, "in_features": in_features, "tile_rows": tile_rows,
             "num_tiles": num_tiles, "activation": act, op_spec(op_type).pattern_attr: tile_rows,
             "plugin_version": PLUGIN_VERSION, "plugin_namespace": NAMESPACE}
    if act == -1:
        raise FieldError(f"{where or op_type}: activation {activation!r} is not one of {sorted(ACTIVATIONS)}")
    return parse_attributes(op_type, attrs, where)


def parse_attributes(op_type: str, attrs: Mapping[str, object], where: str = "") -> LayerAttrs:
    """Check a node's attributes (as read from ONNX or handed to a plugin creator) and return them.

    Raises FieldError naming the node and the attribute: missing, not an int32, out of range, or
    inconsistent (pattern parameter != tile_rows, tiles that do not fit N, unknown plugin namespace)."""
    spec = op_spec(op_type)
    where = where or op_type

    def fail(name: str, msg: str) -> None:
        raise FieldError(f"{where}: attribute '{name}' {msg}")

    values: dict[str, int] = {}
    for name in int_attribute_names(op_type):
        if name not in attrs:
            fail(name, "is missing")
        v = attrs[name]
        if isinstance(v, bool) or not isinstance(v, int):
            fail(name, f"must be an integer, got {v!r}")
        if not 0 <= int(v) <= INT32_MAX:
            fail(name, f"= {v} is outside [0, 2^31) (TensorRT narrows INT attributes to int32)")
        values[name] = int(v)
    for name, expected in (("plugin_version", PLUGIN_VERSION), ("plugin_namespace", NAMESPACE)):
        got = attrs.get(name, expected)
        if isinstance(got, bytes):
            got = got.decode()
        if got != expected:
            fail(name, f"is {got!r}; the sparsetrt plugins are registered as {expected!r}")
    n, k, rows, tiles = (values[a] for a in ("out_features", "in_features", "tile_rows", "num_tiles"))
    if n < 1 or k < 1:
        fail("out_features" if n < 1 else "in_features", "must be >= 1")
    if rows < ROW_GROUP or rows % ROW_GROUP:
        fail("tile_rows", f"= {rows} must be a positive multiple of {ROW_GROUP}")
    if values[spec.pattern_attr] != rows:
        fail(spec.pattern_attr, f"= {values[spec.pattern_attr]} must equal tile_rows = {rows}")
    if tiles < 1 or tiles * rows > n:
        fail("num_tiles", f"= {tiles}: need 1 <= num_tiles and num_tiles x tile_rows ({tiles * rows}) <= out_features ({n})")
    if values["activation"] not in ACTIVATIONS.values():
        fail("activation", f"= {values['activation']} is not one of {ACTIVATIONS}")
    if n * k > INT32_MAX:
        fail("out_features", f"x in_features = {n * k} overflows the int32 index arithmetic of the reference body")
    return LayerAttrs(op_type, n, k, rows, tiles, values["activation"])


# ---- shapes ------------------------------------------------------------------------------------------
def output_shape(xt_shape: Sequence, attrs: LayerAttrs) -> tuple:
    """y = [M, N] from xt = [K, M].  Generic over ints and symbolic dims (TensorRT shape expressions)."""
    return (xt_shape[1], attrs.out_features)


def expected_lengths(attrs: LayerAttrs, kept_total: int) -> dict[str, int]:
    """1-D lengths of the weight inputs, given Σ Kt (= len(k_index) = k_offsets[-1])."""
    width = 2 if attrs.spec.two_four else 1
    return {
        "values": attrs.tile_rows * kept_total // width,
        "meta": attrs.tile_rows * kept_total // 32 if attrs.spec.two_four else 0,
        "k_index": kept_total,
        "k_offsets": attrs.num_tiles + 1,
        "row_index": attrs.out_features,
        "bias": attrs.out_features,
    }


def check_input_shapes(shapes: Sequence[Sequence[int]], attrs: LayerAttrs, where: str = "") -> None:
    """Static checks of the 7 input shapes (what configure/enqueue sees); FieldError names the input."""
    where = where or attrs.op_type
    if len(shapes) != len(INPUTS):
        raise FieldError(f"{where}: expected {len(INPUTS)} inputs {INPUTS}, got {len(shapes)}")
    xt = tuple(shapes[0])
    if len(xt) != 2:
        raise FieldError(f"{where}: input 'xt' must be 2-D [K, M], got shape {xt}")
    if xt[0] != attrs.in_features:
        raise FieldError(f"{where}: input 'xt' has K = {xt[0]} rows, attribute in_features = {attrs.in_features}")
    for name, shape in zip(INPUTS[1:], shapes[1:], strict=True):
        if len(tuple(shape)) != 1:
            raise FieldError(f"{where}: input '{name}' must be 1-D, got shape {tuple(shape)}")
    lengths = dict(zip(INPUTS[1:], (int(s[0]) for s in shapes[1:]), strict=True))
    for name, n in expected_lengths(attrs, lengths["k_index"]).items():
        if lengths[name] != n:
            raise FieldError(f"{where}: input '{name}' has {lengths[name]} elements, expected {n}")


# ---- types and formats ---------------------------------------------------------------------------------
def check_types(dtypes: Sequence[str], attrs: LayerAttrs, *, for_kernel: bool = True, where: str = "") -> None:
    """dtypes of the 7 inputs then the output, as numpy/torch-style names ('float16', 'int32', ...).

    The reference body takes fp32/fp16/bf16; the plugin's kernel (for_kernel) takes fp16/bf16 only."""
    where = where or attrs.op_type
    if len(dtypes) != len(INPUTS) + len(OUTPUTS):
        raise FieldError(f"{where}: expected {len(INPUTS) + len(OUTPUTS)} tensor types, got {len(dtypes)}")
    named = dict(zip((*INPUTS, *OUTPUTS), dtypes, strict=True))
    for name in INT32_INPUTS:
        if named[name] != "int32":
            raise FieldError(f"{where}: input '{name}' must be int32, got {named[name]}")
    act = named["xt"]
    allowed = KERNEL_DTYPES if for_kernel else MODEL_DTYPES
    if act not in allowed:
        hint = (" — the sparse-tensor-core kernels run fp16/bf16; export the model in fp16/bf16, or build "
                "without the plugins (TensorRT then inlines the fp32 reference function)") if for_kernel else ""
        raise FieldError(f"{where}: activation type {act} is not supported by {'the plugin' if for_kernel else 'the op'}"
                         f" (expected one of {allowed}){hint}")
    for name in ("values", "bias", "y"):
        if named[name] != act:
            raise FieldError(f"{where}: '{name}' is {named[name]} but the activation 'xt' is {act}; they must match")


def supports_combination(dtypes: Sequence[str], formats: Sequence[str], attrs: LayerAttrs) -> bool:
    """supportsFormatCombination as a predicate: linear (row-major) tensors of the kernel's types."""
    if any(f != "LINEAR" for f in formats):
        return False
    try:
        check_types(dtypes, attrs)
    except FieldError:
        return False
    return True


# TensorRT's autotune combination strings ("|" = options matched by position across the tensors)
AUTOTUNE_TYPES = "FP16|BF16, FP16|BF16, INT32, INT32, INT32, INT32, FP16|BF16, FP16|BF16"


# ---- launch arguments ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    """The kernel problem of one enqueue: XT [K, ldx] feature-major, M tokens, N outputs."""

    M: int
    K: int
    N: int
    ldx: int
    tile_rows: int
    num_tiles: int
    dtype: str
    activation: str


def problem(shapes: Sequence[Sequence[int]], dtypes: Sequence[str], attrs: LayerAttrs) -> Problem:
    """Everything `launch.enqueue` needs but the pointers, from what TensorRT hands enqueue."""
    check_input_shapes(shapes, attrs)
    check_types(dtypes, attrs)
    k, m = (int(d) for d in shapes[0])   # check_input_shapes tied len(k_offsets) to num_tiles + 1
    return Problem(M=m, K=k, N=attrs.out_features, ldx=m, tile_rows=attrs.tile_rows, num_tiles=attrs.num_tiles,
                   dtype=dtypes[0], activation=attrs.activation_name)


def check_kernel_problem(attrs: LayerAttrs, dtype: str, where: str = "") -> None:
    """Build-time check that the plugin's kernel can run this layer at all (any M)."""
    where = where or attrs.op_type
    if not attrs.spec.has_plugin:
        raise FieldError(f"{where}: {attrs.spec.pattern} layers have no plugin; TensorRT runs their local function")
    if attrs.tile_rows % KERNEL_ROW_GROUP:
        raise FieldError(f"{where}: tile_rows = {attrs.tile_rows}; the kernels need a multiple of {KERNEL_ROW_GROUP}")
    if attrs.in_features < K_STEP:
        raise FieldError(f"{where}: in_features = {attrs.in_features} < {K_STEP}, which the kernels need")
    if dtype not in KERNEL_DTYPES:
        raise FieldError(f"{where}: activation type {dtype}; the plugin's kernels run {KERNEL_DTYPES}")


def aot_scalar_args(xt_shape: Sequence, attrs: LayerAttrs) -> list:
    """The kernel's int scalars after the tensors: M, ldx, K, N, num_tiles, tile_rows, has_bias.
    Generic over ints and TensorRT symbolic dims (xt_shape = [K, M]; dense XT, so ldx = M)."""
    k, m = xt_shape[0], xt_shape[1]
    return [m, m, k, attrs.out_features, attrs.num_tiles, attrs.tile_rows, 1]


def ctas_per_token_tile(attrs: LayerAttrs, dtype: str, plan_fn) -> tuple[int, int]:
    """(CTAs per token tile, tokens per token tile) so that grid_x = cdiv(M, tokens) · ctas, which an AOT
    plugin can write as a symbolic expression of the dynamic M.  Derived from the launch planner
    (`plan_fn` = launch.plan) at M = 1 and checked to be linear in the number of token tiles."""
    p1 = plan_fn(1, attrs.in_features, attrs.out_features, attrs.tile_rows, attrs.num_tiles, dtype,
                 attrs.activation_name)
    ctas = p1.grid[0]
    tokens = None
    def grid(m: int) -> int:
        return plan_fn(m, attrs.in_features, attrs.out_features, attrs.tile_rows, attrs.num_tiles, dtype,
                       attrs.activation_name).grid[0]

    for m in (2**i for i in range(13)):   # the smallest M that needs two token tiles tells the tile size
        if grid(m + 1) != ctas:
            tokens = m
            break
    if tokens is None or grid(tokens + 1) != 2 * ctas or grid(3 * tokens) != 3 * ctas:
        raise FieldError(f"{attrs.op_type}: the launch grid is not linear in the token tiles; cannot express it for AOT")
    return ctas, tokens


# ---- AOT kernel entry points ----------------------------------------------------------------------------
# TensorRT's AOT launch passes (input pointers..., extra int scalars..., output pointers...): the scalars
# sit BETWEEN inputs and outputs (tensorrt.plugin.aot_impl docs).  Our torch/JIT entry points take
# (inputs..., y, scalars...), so the AOT path needs entry points with that order, named <name>_aot.
AOT_KERNEL_SUFFIX = "_aot"
AOT_PARAM_TYPES = ("u64",) * 7 + ("u32",) * 7 + ("u64",)      # 7 inputs, 7 int scalars, y


def aot_kernel_name(kernel_name: str) -> str:
    return kernel_name + AOT_KERNEL_SUFFIX


def ptx_entries(ptx: str) -> dict[str, tuple[str, ...]]:
    """{entry name: parameter types ('u64', 'u32', ...)} of every .entry in a PTX module."""
    import re

    out = {}
    for m in re.finditer(r"\.entry\s+([A-Za-z_$][\w$]*)\s*\(([^)]*)\)", ptx):
        out[m.group(1)] = tuple(re.findall(r"\.param\s+\.(\w+)", m.group(2)))
    return out


def check_aot_entry(ptx: str, name: str) -> None:
    """FieldError unless `name` is in the PTX with TensorRT's AOT parameter order."""
    entries = ptx_entries(ptx)
    if name not in entries:
        raise FieldError(f"the PTX has no entry '{name}' for TensorRT's AOT launch order (inputs, int scalars, "
                         f"output); add it to cuda/kernels.cu, or build with the JIT plugin implementation")
    if entries[name] != AOT_PARAM_TYPES:
        raise FieldError(f"PTX entry '{name}' has parameters {entries[name]}, expected {AOT_PARAM_TYPES} "
                         "(7 input pointers, M, ldx, K, N, num_tiles, tile_rows, has_bias, then y)")
