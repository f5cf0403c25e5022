"""Sparsity pattern configs: small dataclasses in the style of torchao's sparsity configs.

Notation (README): a linear layer computes Y[M, N] = X[M, K] · Wᵀ with W[N, K] — N output features,
K input features.  Conv2d weights are viewed as [C_out, C_in·k_h·k_w].

Every pattern validates itself against a weight shape with `check_shape(name, shape)` and against a
target sparsity with `check_sparsity(name, sparsity)`, raising `PatternError` that names the layer,
the dimension and what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass

# Kept input columns per tile must be a multiple of the kernel's K step: one mma.sp m16n8k32 consumes
# 32 (uncompressed) columns.  Owned here because both the mask selection and the format obey it.
K_STEP = 32
# Output rows per tile must be a multiple of the mma M dimension.
ROW_GROUP = 16


class PatternError(ValueError):
    """A pattern that cannot be applied to a layer (bad shape, bad sparsity, bad parameter)."""


def _positive_int(cls: str, field: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise PatternError(f"{cls}.{field} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class Pattern:
    """Base class.  `kind` names the pattern in reports, files and ONNX attributes."""

    kind = "base"
    # True when the compressed TileSparse format (and so the kernels / ONNX ops) can hold it.
    tile_sparse = False

    def check_shape(self, name: str, shape: tuple[int, int]) -> None:
        n, k = shape
        if n <= 0 or k <= 0:
            raise PatternError(f"layer '{name}': weight shape {tuple(shape)} has an empty dimension")

    def check_sparsity(self, name: str, sparsity: float) -> None:
        if not 0.0 <= float(sparsity) < 1.0:
            raise PatternError(f"layer '{name}': sparsity must be in [0, 1), got {sparsity!r}")

    def describe(self) -> str:
        return self.kind


@dataclass(frozen=True)
class Unstructured(Pattern):
    """Element-wise magnitude/Taylor pruning, per layer.  Accuracy upper bound; no fast kernel."""

    kind = "unstructured"


@dataclass(frozen=True)
class NM(Pattern):
    """n of every m consecutive weights along K kept (2:4 is what sparse tensor cores run)."""

    n: int = 2
    m: int = 4
    kind = "nm"

    def __post_init__(self) -> None:
        _positive_int("NM", "n", self.n)
        _positive_int("NM", "m", self.m)
        if self.n >= self.m:
            raise PatternError(f"NM: n must be smaller than m, got n={self.n}, m={self.m}")

    @property
    def tile_sparse(self) -> bool:  # type: ignore[override]
        return (self.n, self.m) == (2, 4)

    def check_shape(self, name: str, shape: tuple[int, int]) -> None:
        super().check_shape(name, shape)
        n, k = shape
        if k % self.m:
            raise PatternError(f"layer '{name}': input dimension K={k} is not a multiple of m={self.m} for {self.describe()}")
        if self.tile_sparse and (k % K_STEP or n % ROW_GROUP):
            raise PatternError(
                f"layer '{name}': 2:4 layers run as tile-sparse and need K % {K_STEP} == 0 and N % {ROW_GROUP} == 0, got N={n}, K={k}"
            )

    def check_sparsity(self, name: str, sparsity: float) -> None:
        super().check_sparsity(name, sparsity)
        fixed = 1.0 - self.n / self.m
        if abs(float(sparsity) - fixed) > 1e-6:
            raise PatternError(f"layer '{name}': {self.describe()} has a fixed sparsity of {fixed:g}, got {sparsity!r}")

    def describe(self) -> str:
        return f"{self.n}:{self.m}"


@dataclass(frozen=True)
class Block(Pattern):
    """b×b blocks kept or pruned whole (the Triton/BSR baseline)."""

    b: int = 32
    kind = "block"

    def __post_init__(self) -> None:
        _positive_int("Block", "b", self.b)

    def check_shape(self, name: str, shape: tuple[int, int]) -> None:
        super().check_shape(name, shape)
        for dim, size in zip(("N", "K"), shape, strict=True):
            if size % self.b:
                raise PatternError(f"layer '{name}': dimension {dim}={size} is not a multiple of block size b={self.b}")

    def describe(self) -> str:
        return f"block{self.b}"


@dataclass(frozen=True)
class _Tiled(Pattern):
    """Shared rules of the tile-sparse patterns: tiles of `rows` output features, kept K multiple of 32."""

    tile_sparse = True

    @property
    def rows(self) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def two_four(self) -> bool:
        return True

    def check_shape(self, name: str, shape: tuple[int, int]) -> None:
        super().check_shape(name, shape)
        n, k = shape
        if n % self.rows:
            raise PatternError(
                f"layer '{name}': output dimension N={n} is not a multiple of the tile height {self.rows} for {self.describe()}"
            )
        if k < K_STEP:
            raise PatternError(f"layer '{name}': input dimension K={k} is smaller than the kernel K step {K_STEP}")

    def min_sparsity(self) -> float:
        return 0.5 if self.two_four else 0.0


@dataclass(frozen=True)
class HiNM(_Tiled):
    """Hierarchical N:M: blocks of `vector` output rows keep the same number of input column vectors
    (a multiple of 32), then n:m along K inside the kept vectors.  Total = 1 − (1 − s_v)·n/m."""

    vector: int = 64
    n: int = 2
    m: int = 4
    kind = "hinm"

    def __post_init__(self) -> None:
        _positive_int("HiNM", "vector", self.vector)
        if (self.n, self.m) != (2, 4):
            raise PatternError(f"HiNM: only n:m = 2:4 runs on sparse tensor cores, got {self.n}:{self.m}")
        if self.vector % ROW_GROUP:
            raise PatternError(f"HiNM.vector must be a multiple of {ROW_GROUP}, got {self.vector}")

    @property
    def rows(self) -> int:
        return self.vector

    def check_sparsity(self, name: str, sparsity: float) -> None:
        super().check_sparsity(name, sparsity)
        if float(sparsity) < 0.5 - 1e-9:
            raise PatternError(f"layer '{name}': {self.describe()} includes 2:4, so sparsity must be >= 0.5, got {sparsity!r}")

    def describe(self) -> str:
        return f"HiNM(V={self.vector},{self.n}:{self.m})"


@dataclass(frozen=True)
class TW(_Tiled):
    """Tile-wise: tiles of `tile` output features each keep their own set of input rows, chosen with one
    global threshold across all layers.  `output_share` of the sparsity may come from pruning whole
    output features first (the paper's tw2); 0 keeps every output feature.

    `score_norm="mean"` divides each layer's scores by their mean before the global threshold, so a
    layer's sparsity follows how its weights rank against each other rather than its weight scale
    (init scales with 1/sqrt(K), which would otherwise prune wide-input layers almost entirely);
    `"none"` is the paper's raw global threshold."""

    tile: int = 128
    output_share: float = 0.0
    score_norm: str = "mean"
    kind = "tw"

    def __post_init__(self) -> None:
        _positive_int(type(self).__name__, "tile", self.tile)
        if self.tile % ROW_GROUP:
            raise PatternError(f"{type(self).__name__}.tile must be a multiple of {ROW_GROUP}, got {self.tile}")
        if not 0.0 <= self.output_share < 1.0:
            raise PatternError(f"{type(self).__name__}.output_share must be in [0, 1), got {self.output_share!r}")
        if self.score_norm not in ("mean", "none"):
            raise PatternError(f"{type(self).__name__}.score_norm must be 'mean' or 'none', got {self.score_norm!r}")

    @property
    def rows(self) -> int:
        return self.tile

    @property
    def two_four(self) -> bool:
        return False

    def describe(self) -> str:
        return f"TW(G={self.tile})"


@dataclass(frozen=True)
class TVW(TW):
    """Tile-vector-wise: TW at the global level, then n:m (2:4) along the compacted K of every tile."""

    n: int = 2
    m: int = 4
    kind = "tvw"

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.n, self.m) != (2, 4):
            raise PatternError(f"TVW: only n:m = 2:4 runs on sparse tensor cores, got {self.n}:{self.m}")

    @property
    def two_four(self) -> bool:
        return True

    def check_sparsity(self, name: str, sparsity: float) -> None:
        super().check_sparsity(name, sparsity)
        if float(sparsity) < 0.5 - 1e-9:
            raise PatternError(f"layer '{name}': {self.describe()} includes 2:4, so sparsity must be >= 0.5, got {sparsity!r}")

    def describe(self) -> str:
        return f"TVW(G={self.tile},{self.n}:{self.m})"


_BY_NAME = {"unstructured": Unstructured, "nm": NM, "block": Block, "hinm": HiNM, "tw": TW, "tvw": TVW}


def pattern_from_spec(spec: str | dict | Pattern) -> Pattern:
    """Build a pattern from a CLI/config spec: 'hinm', 'hinm:vector=128', {'kind': 'tvw', 'tile': 64}."""
    if isinstance(spec, Pattern):
        return spec
    if isinstance(spec, str):
        kind, _, rest = spec.partition(":")
        params: dict = {}
        for item in filter(None, rest.split(",")):
            key, sep, value = item.partition("=")
            if not sep:
                raise PatternError(f"pattern spec '{spec}': expected key=value, got '{item}'")
            value = value.strip()
            params[key.strip()] = float(value) if "." in value else int(value) if value.lstrip("-").isdigit() else value
    else:
        params = dict(spec)
        kind = str(params.pop("kind", ""))
    cls = _BY_NAME.get(kind.strip().lower())
    if cls is None:
        raise PatternError(f"unknown pattern '{kind}'; expected one of {sorted(_BY_NAME)}")
    try:
        return cls(**params)
    except TypeError as err:
        raise PatternError(f"pattern '{kind}': {err}") from None
