"""The TileSparse format: the one compressed layout for HiNM, TVW, TW (and plain 2:4).

A weight W[N, K] is cut into T tiles of R output rows.  Tile t
  * writes the output features `row_index[t*R:(t+1)*R]` (HiNM: a block of V rows, possibly permuted;
    TW/TVW: R kept output features); `row_index` is a permutation of 0..N-1 whose last N − T·R entries
    are pruned output features, which output just their bias,
  * reads the kept input columns `k_index[k_offsets[t]:k_offsets[t+1]]` (Kt of them, a multiple of 32,
    in the order the 2:4 groups are formed: ascending unless `index_order == "free"`),
  * stores its values row-major as [R, Kt/2] (2:4: the 2 kept of every 4 consecutive kept columns)
    or [R, Kt] (TW: dense tiles), tile after tile in one flat `values` buffer,
  * stores 2:4 metadata as R·Kt/32 uint32 words in mma.sp m16n8k32 fragment order (see `meta`).

Byte layout and a worked 16×32 example: docs/FORMAT.md.  Reference math, CUDA kernels, ONNX export
and TensorRT plugins all read these same tensors.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..patterns import K_STEP, ROW_GROUP
from . import meta as meta_layout

FORMAT_NAME = "sparsetrt.tilesparse"
FORMAT_VERSION = 1
VALUE_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
INDEX_ORDERS = ("ascending", "free")
TENSOR_FIELDS = ("values", "meta", "k_index", "k_offsets", "row_index")


class FormatError(ValueError):
    """Compressed data that is corrupted or inconsistent; the message names the layer and tensor."""


@dataclass
class TileSparseWeight:
    shape: tuple[int, int]
    tile_rows: int
    two_four: bool
    values: torch.Tensor
    meta: torch.Tensor
    k_index: torch.Tensor
    k_offsets: torch.Tensor
    row_index: torch.Tensor
    pattern: str = "tilesparse"
    index_order: str = "ascending"
    name: str = field(default="", compare=False)

    # ---- geometry -------------------------------------------------------------------------------
    @property
    def num_tiles(self) -> int:
        return int(self.k_offsets.numel()) - 1

    @property
    def kept_per_tile(self) -> list[int]:
        return torch.diff(self.k_offsets.to(torch.int64)).tolist()

    @property
    def uniform_kept(self) -> int | None:
        """Kt when every tile keeps the same number of columns (HiNM), else None."""
        kept = set(self.kept_per_tile)
        return kept.pop() if len(kept) == 1 else None

    @property
    def value_width(self) -> int:
        """Stored values per kept column: 1/2 for 2:4 (as a divisor), 1 for dense tiles."""
        return 2 if self.two_four else 1

    def value_offset(self, t: int) -> int:
        return self.tile_rows * int(self.k_offsets[t]) // self.value_width

    def meta_offset(self, t: int) -> int:
        return meta_layout.words_per_tile(self.tile_rows, int(self.k_offsets[t])) if self.two_four else 0

    @property
    def nnz(self) -> int:
        return int(self.values.numel())

    @property
    def density(self) -> float:
        n, k = self.shape
        return self.nnz / float(n * k)

    @property
    def dtype(self) -> torch.dtype:
        return self.values.dtype

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f: getattr(self, f) for f in TENSOR_FIELDS}

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> TileSparseWeight:
        moved = {f: t.to(device) for f, t in self.tensors().items()}
        if dtype is not None:
            moved["values"] = moved["values"].to(dtype)
        return TileSparseWeight(self.shape, self.tile_rows, self.two_four, **moved, pattern=self.pattern,
                                index_order=self.index_order, name=self.name)

    # ---- decoding ---------------------------------------------------------------------------------
    def tile_columns(self, t: int) -> torch.Tensor:
        return self.k_index[int(self.k_offsets[t]):int(self.k_offsets[t + 1])].to(torch.int64)

    def tile_rows_index(self, t: int) -> torch.Tensor:
        return self.row_index[t * self.tile_rows:(t + 1) * self.tile_rows].to(torch.int64)

    def tile_dense(self, t: int, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The compacted tile [R, Kt] with zeros where 2:4 pruned."""
        rows, kept = self.tile_rows, int(self.k_offsets[t + 1] - self.k_offsets[t])
        start = self.value_offset(t)
        vals = self.values[start:start + rows * kept // self.value_width].reshape(rows, -1)
        dtype = dtype or self.values.dtype
        if not self.two_four:
            return vals.to(dtype)
        m0 = self.meta_offset(t)
        words = self.meta[m0:m0 + meta_layout.words_per_tile(rows, kept)].cpu().numpy()
        pos = torch.from_numpy(meta_layout.decode(words, rows, kept)).to(vals.device)
        cols = (torch.arange(kept // 2, device=vals.device) // 2) * 4 + pos
        out = torch.zeros(rows, kept, dtype=dtype, device=vals.device)
        out.scatter_(1, cols, vals.to(dtype))
        return out

    def decompress(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Dense W[N, K] with zeros at pruned positions (bit-exact copies of the stored values)."""
        out = torch.zeros(self.shape, dtype=dtype or self.values.dtype, device=self.values.device)
        for t in range(self.num_tiles):
            rows, cols = self.tile_rows_index(t), self.tile_columns(t)
            out[rows[:, None], cols[None, :]] = self.tile_dense(t, out.dtype)
        return out

    def mask(self) -> torch.Tensor:
        """Boolean [N, K]: the positions the format keeps (even where a kept value is 0)."""
        kept = TileSparseWeight(self.shape, self.tile_rows, self.two_four, torch.ones_like(self.values, dtype=torch.float32),
                                self.meta, self.k_index, self.k_offsets, self.row_index)
        return kept.decompress() != 0

    def matmul(self, x: torch.Tensor, bias: torch.Tensor | None = None, activation: str = "none") -> torch.Tensor:
        """Reference Y = act(X · Wᵀ + b) from the compressed tensors, gathering X by tile like the kernel.

        Computes in float64 when x is float64, else float32; returns x's dtype."""
        n, k = self.shape
        if x.shape[-1] != k:
            raise ValueError(f"{self.name or 'TileSparseWeight'}: input has {x.shape[-1]} features, expected K={k}")
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        xa = x.to(acc)
        y = torch.zeros(*x.shape[:-1], n, dtype=acc, device=x.device)
        if bias is not None:
            y = y + bias.to(acc)
        kept = self.uniform_kept
        rows_all = self.row_index[:self.num_tiles * self.tile_rows].to(torch.int64)
        if kept is not None:   # one batched gather-GEMM for uniform tiles (HiNM)
            tiles = torch.stack([self.tile_dense(t, acc) for t in range(self.num_tiles)])      # [T, R, Kt]
            xg = xa[..., self.k_index.to(torch.int64).view(self.num_tiles, kept)]              # [..., T, Kt]
            part = torch.einsum("...tk,trk->...tr", xg, tiles).reshape(*x.shape[:-1], -1)
            y[..., rows_all] += part
        else:
            for t in range(self.num_tiles):
                y[..., self.tile_rows_index(t)] += xa[..., self.tile_columns(t)] @ self.tile_dense(t, acc).T
        y = apply_activation(y, activation)
        return y.to(x.dtype)

    # ---- validation -------------------------------------------------------------------------------
    def validate(self) -> TileSparseWeight:
        """Raise FormatError on any inconsistency; return self so calls chain."""
        where = f"layer '{self.name}'" if self.name else "TileSparseWeight"

        def fail(tensor: str, msg: str) -> None:
            raise FormatError(f"{where}: tensor '{tensor}': {msg}")

        if len(self.shape) != 2 or min(self.shape) <= 0:
            fail("shape", f"expected a positive (N, K), got {self.shape}")
        n, k = (int(s) for s in self.shape)
        if self.tile_rows <= 0 or self.tile_rows % ROW_GROUP:
            fail("tile_rows", f"expected a positive multiple of {ROW_GROUP}, got {self.tile_rows}")
        if self.index_order not in INDEX_ORDERS:
            fail("index_order", f"expected one of {INDEX_ORDERS}, got {self.index_order!r}")
        if self.values.dtype not in VALUE_DTYPES:
            fail("values", f"dtype {self.values.dtype} is not one of fp16/bf16/fp32")
        for f in ("meta", "k_index", "k_offsets", "row_index"):
            if getattr(self, f).dtype != torch.int32:
                fail(f, f"dtype must be int32, got {getattr(self, f).dtype}")
        for f in TENSOR_FIELDS:
            if getattr(self, f).dim() != 1:
                fail(f, f"must be 1-D, got shape {tuple(getattr(self, f).shape)}")
        offs = self.k_offsets.to(torch.int64).cpu()
        if offs.numel() < 2 or int(offs[0]) != 0:
            fail("k_offsets", f"must start at 0 and hold T+1 >= 2 entries, got {offs[:4].tolist()}...")
        kept = torch.diff(offs)
        bad = torch.nonzero((kept <= 0) | (kept % K_STEP != 0) | (kept > k)).flatten()
        if bad.numel():
            t = int(bad[0])
            fail("k_offsets", f"tile {t} keeps {int(kept[t])} columns; expected a positive multiple of {K_STEP} <= K={k}")
        if int(offs[-1]) != self.k_index.numel():
            fail("k_index", f"holds {self.k_index.numel()} indices but k_offsets ends at {int(offs[-1])}")
        tiles = self.num_tiles
        rows = self.row_index.to(torch.int64).cpu()
        if rows.numel() != n:
            fail("row_index", f"holds {rows.numel()} entries, expected N = {n} (tile rows first, then pruned features)")
        if tiles * self.tile_rows > n:
            fail("k_offsets", f"{tiles} tiles of {self.tile_rows} rows exceed N = {n}")
        if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= n):
            fail("row_index", f"output feature out of range [0, {n}): min {int(rows.min())}, max {int(rows.max())}")
        if torch.unique(rows).numel() != rows.numel():
            fail("row_index", "an output feature is written more than once")
        kidx = self.k_index.to(torch.int64).cpu()
        if kidx.numel() and (int(kidx.min()) < 0 or int(kidx.max()) >= k):
            t = int(torch.searchsorted(offs, torch.nonzero((kidx < 0) | (kidx >= k))[0], right=True)[0]) - 1
            fail("k_index", f"tile {t}: input column out of range [0, {k})")
        for t in range(tiles):
            cols = kidx[int(offs[t]):int(offs[t + 1])]
            if self.index_order == "ascending" and cols.numel() > 1 and bool((torch.diff(cols) <= 0).any()):
                dup = bool((torch.diff(cols) == 0).any())
                fail("k_index", f"tile {t}: indices are {'duplicated' if dup else 'not ascending'} (index_order='ascending')")
            if torch.unique(cols).numel() != cols.numel():
                fail("k_index", f"tile {t}: duplicate input column")
        expected_values = self.tile_rows * int(offs[-1]) // self.value_width
        if self.values.numel() != expected_values:
            fail("values", f"holds {self.values.numel()} values, expected {expected_values}")
        if self.two_four:
            expected_words = meta_layout.words_per_tile(self.tile_rows, int(offs[-1]))
            if self.meta.numel() != expected_words:
                fail("meta", f"holds {self.meta.numel()} words, expected {expected_words}")
            bad_nib = meta_layout.invalid_nibbles(self.meta.cpu().numpy())
            if bad_nib.any():
                word = int(np.nonzero(bad_nib.any(axis=1))[0][0])
                fail("meta", f"word {word} has a group that does not encode exactly 2 distinct positions of 4")
        elif self.meta.numel():
            fail("meta", "must be empty for dense (TW) tiles")
        return self


def apply_activation(y: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "none":
        return y
    if activation == "relu":
        return torch.relu(y)
    if activation == "gelu":
        return torch.nn.functional.gelu(y)
    raise ValueError(f"activation must be 'none', 'relu' or 'gelu', got {activation!r}")


# ---- compression ------------------------------------------------------------------------------------
def compress(
    weight: torch.Tensor,
    mask: torch.Tensor,
    rows: torch.Tensor,
    cols: Sequence[torch.Tensor],
    *,
    two_four: bool,
    pattern: str = "tilesparse",
    index_order: str = "ascending",
    dtype: torch.dtype | None = None,
    name: str = "",
) -> TileSparseWeight:
    """Pack `weight` kept by `mask` into tiles: rows [T, R] output features, cols[t] the kept input
    columns of tile t in 2:4 group order.  The mask inside every tile must be exactly 2:4 along the
    compacted columns (or all-true for dense tiles), and nothing may be kept outside the tiles."""
    where = f"layer '{name}'" if name else "compress"
    weight = weight.detach()
    mask = mask.to(torch.bool)
    if weight.dim() != 2 or mask.shape != weight.shape:
        raise FormatError(f"{where}: weight {tuple(weight.shape)} and mask {tuple(mask.shape)} must be the same 2-D shape")
    rows = torch.as_tensor(rows, dtype=torch.int64)
    if rows.dim() != 2 or rows.shape[0] != len(cols):
        raise FormatError(f"{where}: rows must be [T, R] with one column list per tile")
    values, words, covered = [], [], 0
    for t, c in enumerate(cols):
        c = torch.as_tensor(c, dtype=torch.int64)
        sub_mask = mask[rows[t][:, None], c[None, :]]
        sub_w = weight[rows[t][:, None], c[None, :]]
        covered += int(sub_mask.sum())
        if not two_four:
            if not bool(sub_mask.all()):
                raise FormatError(f"{where}: tile {t} is not dense over its kept columns (TW tiles keep whole K-rows)")
            values.append(sub_w.reshape(-1))
            continue
        if c.numel() % K_STEP:
            raise FormatError(f"{where}: tile {t} keeps {c.numel()} columns, not a multiple of {K_STEP}")
        grouped = sub_mask.reshape(sub_mask.shape[0], -1, 4)
        per_group = grouped.sum(-1)
        if bool((per_group != 2).any()):
            r, g = (int(v) for v in torch.nonzero(per_group != 2)[0])
            raise FormatError(f"{where}: tile {t}, row {r}, group {g} keeps {int(per_group[r, g])} of 4 values, expected 2")
        pos = torch.nonzero(grouped.reshape(-1, 4))[:, 1].reshape(sub_mask.shape[0], -1)   # ascending per group
        values.append(sub_w[sub_mask].reshape(-1))   # row-major, ascending within group: matches pos order
        words.append(meta_layout.encode(pos.cpu().numpy()))
    if covered != int(mask.sum()):
        raise FormatError(f"{where}: the mask keeps {int(mask.sum()) - covered} weights outside the tiles")
    offsets = np.concatenate([[0], np.cumsum([len(c) for c in cols])]).astype(np.int32)
    pruned_rows = torch.ones(weight.shape[0], dtype=torch.bool)
    pruned_rows[rows.reshape(-1)] = False
    meta_words = np.concatenate(words) if words else np.zeros(0, np.uint32)
    fmt = TileSparseWeight(
        shape=(int(weight.shape[0]), int(weight.shape[1])),
        tile_rows=int(rows.shape[1]),
        two_four=two_four,
        values=torch.cat(values).to(dtype or weight.dtype).contiguous(),
        meta=torch.from_numpy(meta_words.astype(np.uint32).view(np.int32).copy()),
        k_index=torch.cat([torch.as_tensor(c, dtype=torch.int32) for c in cols]),
        k_offsets=torch.from_numpy(offsets),
        row_index=torch.cat([rows.reshape(-1), torch.nonzero(pruned_rows).flatten()]).to(torch.int32),
        pattern=pattern,
        index_order=index_order,
        name=name,
    )
    return fmt.validate()


# ---- files ------------------------------------------------------------------------------------------
def save(path: str | Path, layers: Mapping[str, tuple[TileSparseWeight, torch.Tensor | None]], *,
         extra_tensors: Mapping[str, torch.Tensor] | None = None, extra_metadata: Mapping[str, str] | None = None) -> None:
    """Write named layers (format, optional bias) to one safetensors file; `extra_tensors` (keys without
    '::') and `extra_metadata` ride along for whole-model checkpoints."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    for key, t in (extra_tensors or {}).items():
        if "::" in key:
            raise FormatError(f"extra tensor name '{key}' may not contain '::'")
        tensors[key] = t.detach().cpu().contiguous()
    header: dict[str, dict] = {}
    for name, (fmt, bias) in layers.items():
        if "::" in name:
            raise FormatError(f"layer name '{name}' may not contain '::'")
        fmt.validate()
        for f, t in fmt.tensors().items():
            tensors[f"{name}::{f}"] = t.detach().cpu().contiguous()
        if bias is not None:
            tensors[f"{name}::bias"] = bias.detach().cpu().contiguous()
        header[name] = {"shape": list(fmt.shape), "tile_rows": fmt.tile_rows, "two_four": fmt.two_four,
                        "pattern": fmt.pattern, "index_order": fmt.index_order}
    meta = dict(extra_metadata or {})
    meta.update({"format": FORMAT_NAME, "version": str(FORMAT_VERSION), "layers": json.dumps(header)})
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)   # never leave a half-written file under the real name


def load(path: str | Path, *, with_extras: bool = False):
    """Read and validate every layer of a file written by `save`.  Returns {name: (format, bias)}, or
    with `with_extras` the tuple (layers, extra_tensors, metadata)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as err:  # safetensors raises its own error types for truncated/garbled files
        raise FormatError(f"{path}: not a readable safetensors file ({err})") from None
    if meta.get("format") != FORMAT_NAME:
        raise FormatError(f"{path}: header 'format' is {meta.get('format')!r}, expected {FORMAT_NAME!r}")
    if meta.get("version") != str(FORMAT_VERSION):
        raise FormatError(f"{path}: format version {meta.get('version')!r} is not supported (expected {FORMAT_VERSION})")
    try:
        header = json.loads(meta["layers"])
    except (KeyError, json.JSONDecodeError) as err:
        raise FormatError(f"{path}: header 'layers' is missing or not JSON ({err})") from None
    out = {}
    for name, info in header.items():
        missing = [f for f in TENSOR_FIELDS if f"{name}::{f}" not in tensors]
        if missing:
            raise FormatError(f"{path}: layer '{name}': missing tensor(s) {missing}")
        try:
            fmt = TileSparseWeight(shape=tuple(int(s) for s in info["shape"]), tile_rows=int(info["tile_rows"]),
                                   two_four=bool(info["two_four"]), pattern=str(info.get("pattern", "tilesparse")),
                                   index_order=str(info.get("index_order", "ascending")), name=name,
                                   **{f: tensors[f"{name}::{f}"] for f in TENSOR_FIELDS})
        except (KeyError, TypeError, ValueError) as err:
            raise FormatError(f"{path}: layer '{name}': bad header entry ({err})") from None
        fmt.validate()
        bias = tensors.get(f"{name}::bias")
        if bias is not None and tuple(bias.shape) != (fmt.shape[0],):
            raise FormatError(f"{path}: layer '{name}': tensor 'bias' has shape {tuple(bias.shape)}, expected ({fmt.shape[0]},)")
        out[name] = (fmt, bias)
    if with_extras:
        return out, {k: t for k, t in tensors.items() if "::" not in k}, meta
    return out


def padded_kept(k: int) -> int:
    """Round a kept-column count to the kernel step (at least one step)."""
    return max(K_STEP, int(math.floor(k / K_STEP + 0.5)) * K_STEP)
