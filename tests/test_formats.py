"""TileSparse format: bit-exact round trips, an independent metadata decoder, save/load, corruption."""

import numpy as np
import pytest
import torch

from exporter import NM, TVW, TW, HiNM, select_masks
from exporter.formats import FormatError, compress, load, save
from exporter.formats import meta as meta_layout

PATTERNS = [(HiNM(vector=32), 0.75), (HiNM(vector=64), 0.875), (TVW(tile=32), 0.75), (TVW(tile=64, output_share=0.3), 0.8),
            (TW(tile=32), 0.6), (NM(2, 4), 0.5)]
DTYPES = [torch.float16, torch.bfloat16, torch.float32]


def make(pattern, sparsity, n, k, dtype, rng):
    w = torch.randn(n, k, generator=rng).to(dtype)
    lm = select_masks({"layer": w.float().abs()}, pattern, sparsity)["layer"]
    order = "free" if any(bool((torch.diff(c) <= 0).any()) for c in lm.cols) else "ascending"
    fmt = compress(w, lm.mask, lm.rows, lm.cols, two_four=lm.two_four, index_order=order, name="layer")
    return w, lm, fmt


def bit_decoder(words, rows, kept):
    """Independent decoder, bit by bit, straight from the layout spec in docs/FORMAT.md."""
    pos = np.zeros((rows, kept // 2), dtype=np.int64)
    steps, groups = kept // 32, rows // 16
    for s in range(steps):
        for q in range(groups):
            for g in range(8):
                for t in range(2):
                    word = int(words[((s * groups + q) * 8 + g) * 2 + t]) & 0xFFFFFFFF
                    for h, row in enumerate((16 * q + g, 16 * q + g + 8)):
                        for j in range(4):
                            nib = (word >> (16 * h + 4 * j)) & 0xF
                            group = 8 * s + 4 * t + j
                            pos[row, 2 * group] = nib & 0b11
                            pos[row, 2 * group + 1] = (nib >> 2) & 0b11
    return pos


@pytest.mark.parametrize("pattern,sparsity", PATTERNS, ids=lambda p: getattr(p, "kind", str(p)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_round_trip_bit_exact(pattern, sparsity, dtype, rng):
    n = 64 * int(torch.randint(1, 4, (1,), generator=rng))
    k = 32 * int(torch.randint(2, 7, (1,), generator=rng)) + (0 if isinstance(pattern, NM) else int(torch.randint(0, 31, (1,), generator=rng)))
    w, lm, fmt = make(pattern, sparsity, n, k, dtype, rng)
    dense = fmt.decompress()
    assert dense.dtype == dtype
    assert torch.equal(dense, w * lm.mask), "decompress must reproduce exactly the kept weights"
    assert torch.equal(fmt.mask(), lm.mask)
    recompressed = compress(dense, lm.mask, lm.rows, lm.cols, two_four=lm.two_four, index_order=fmt.index_order)
    for f, t in fmt.tensors().items():
        assert torch.equal(t, getattr(recompressed, f)), f


@pytest.mark.parametrize("pattern,sparsity", [(HiNM(vector=32), 0.75), (TVW(tile=48), 0.8), (NM(2, 4), 0.5)])
def test_metadata_matches_independent_decoder(pattern, sparsity, rng):
    w, lm, fmt = make(pattern, sparsity, 96, 160, torch.float32, rng)
    words = fmt.meta.numpy().view(np.uint32)
    for t in range(fmt.num_tiles):
        kept = int(fmt.k_offsets[t + 1] - fmt.k_offsets[t])
        tile_words = words[fmt.meta_offset(t):fmt.meta_offset(t) + fmt.tile_rows * kept // 32]
        pos = bit_decoder(tile_words, fmt.tile_rows, kept)
        assert np.array_equal(pos, meta_layout.decode(tile_words, fmt.tile_rows, kept))
        sub = lm.mask[fmt.tile_rows_index(t)[:, None], fmt.tile_columns(t)[None, :]]
        expect = torch.nonzero(sub.reshape(-1, 4))[:, 1].reshape(fmt.tile_rows, -1).numpy()
        assert np.array_equal(pos, expect)
        assert (pos[:, 0::2] < pos[:, 1::2]).all()


def test_metadata_worked_example():
    """The 16×32 example of docs/FORMAT.md: row r keeps positions (r % 3, 3) in every group."""
    pos = np.tile(np.array([[r % 3, 3] for r in range(16)]), (1, 8))
    words = meta_layout.encode(pos)
    assert words.shape == (16,)
    # row 0 nibble = 0 | 3<<2 = 0xC, row 8 nibble = (8 % 3 = 2) | 3<<2 = 0xE
    assert words[0] == 0xEEEE_CCCC
    assert words[1] == 0xEEEE_CCCC
    # row 1: 1 | 3<<2 = 0xD; row 9: 0 | 3<<2 = 0xC
    assert words[2] == 0xCCCC_DDDD


def test_save_load_round_trip(tmp_path, rng):
    layers = {}
    for i, (pattern, sparsity) in enumerate(PATTERNS[:4]):
        _, _, fmt = make(pattern, sparsity, 64, 96, DTYPES[i % 3], rng)
        layers[f"block.{i}"] = (fmt, torch.randn(64, generator=rng) if i % 2 else None)
    path = tmp_path / "w.safetensors"
    save(path, layers)
    back = load(path)
    assert set(back) == set(layers)
    for name, (fmt, bias) in layers.items():
        got, got_bias = back[name]
        assert got.shape == fmt.shape and got.tile_rows == fmt.tile_rows and got.two_four == fmt.two_four
        for f, t in fmt.tensors().items():
            assert torch.equal(t, getattr(got, f)), (name, f)
        assert (bias is None and got_bias is None) or torch.equal(bias, got_bias)


# ---- corruption: each kind yields its own clear error ------------------------------------------------
@pytest.fixture
def fmt(rng):
    return make(HiNM(vector=32), 0.75, 64, 128, torch.float16, rng)[2]


def corrupt(fmt, field, fn):
    t = getattr(fmt, field).clone()
    fn(t)
    setattr(fmt, field, t)
    return fmt


@pytest.mark.parametrize("field,fn,message", [
    ("k_index", lambda t: t.__setitem__(3, 10_000), "out of range"),
    ("k_index", lambda t: t.__setitem__(slice(0, 2), t[0:2].flip(0).clone()), "not ascending"),
    ("k_index", lambda t: t.__setitem__(1, t[0]), "duplicated"),
    ("meta", lambda t: t.__setitem__(0, 0), "exactly 2 distinct"),
    ("meta", lambda t: t.__setitem__(5, int(np.uint32(0x5555_5555).view(np.int32))), "exactly 2 distinct"),
    ("row_index", lambda t: t.__setitem__(1, t[0]), "written more than once"),
    ("row_index", lambda t: t.__setitem__(0, -1), "out of range"),
])
def test_corrupted_fields_are_rejected(fmt, field, fn, message):
    with pytest.raises(FormatError, match=message) as err:
        corrupt(fmt, field, fn).validate()
    assert "layer 'layer'" in str(err.value) and field in str(err.value)


def test_free_order_accepts_unsorted_but_not_duplicates(fmt):
    fmt.index_order = "free"
    corrupt(fmt, "k_index", lambda t: t.__setitem__(slice(0, 2), t[0:2].flip(0).clone())).validate()
    with pytest.raises(FormatError, match="duplicate"):
        corrupt(fmt, "k_index", lambda t: t.__setitem__(1, t[0])).validate()


def test_truncated_values_and_bad_offsets(fmt):
    fmt.values = fmt.values[:-8]
    with pytest.raises(FormatError, match="'values'.*expected"):
        fmt.validate()


def test_offsets_not_multiple_of_step(fmt):
    fmt.k_offsets = fmt.k_offsets.clone()
    fmt.k_offsets[1] -= 4
    with pytest.raises(FormatError, match="multiple of 32"):
        fmt.validate()


def test_wrong_index_dtype(fmt):
    fmt.k_index = fmt.k_index.to(torch.int64)
    with pytest.raises(FormatError, match="'k_index'.*int32"):
        fmt.validate()


def test_file_errors(tmp_path, fmt):
    path = tmp_path / "w.safetensors"
    save(path, {"fc": (fmt, None)})
    data = path.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError, match="not a readable safetensors file"):
        load(tmp_path / "trunc.safetensors")
    with pytest.raises(FormatError, match="no such file"):
        load(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    tensors = {f"fc::{f}": t for f, t in fmt.tensors().items() if f != "meta"}
    save_file(tensors, str(tmp_path / "nometa.safetensors"), metadata={"format": "sparsetrt.tilesparse", "version": "1",
              "layers": '{"fc": {"shape": [64, 128], "tile_rows": 32, "two_four": true}}'})
    with pytest.raises(FormatError, match=r"layer 'fc': missing tensor\(s\) \['meta'\]"):
        load(tmp_path / "nometa.safetensors")
    save_file(tensors, str(tmp_path / "other.safetensors"), metadata={"format": "something-else"})
    with pytest.raises(FormatError, match="expected 'sparsetrt.tilesparse'"):
        load(tmp_path / "other.safetensors")


def test_compress_rejects_masks_that_do_not_fit(rng):
    w = torch.randn(32, 64, generator=rng)
    lm = select_masks({"fc": w.abs()}, HiNM(vector=32), 0.75)["fc"]
    bad = lm.mask.clone()
    r, c = torch.nonzero(bad)[0]
    bad[r, c] = False
    with pytest.raises(FormatError, match="keeps 1 of 4 values, expected 2"):
        compress(w, bad, lm.rows, lm.cols, two_four=True, name="fc")
    outside = lm.mask.clone()
    outside[:, [c for c in range(64) if c not in set(lm.cols[0].tolist())][0]] = True
    with pytest.raises(FormatError, match="outside the tiles"):
        compress(w, outside, lm.rows, lm.cols, two_four=True, name="fc")
