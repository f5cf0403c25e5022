"""On the GPU: the plugins' runtime function (what the TensorRT plugin's enqueue calls) with device tensors
shaped as TensorRT passes them, and `sparsetrt validate` with the GPU runner for every model and pattern.

Run on the device: bash tools/run_gpu_tests.sh tests/test_export_gpu.py"""

import pytest
import torch

from trt_plugins import fields, plugin_runtime

from .gpu_helpers import REL_TOL, make_format

pytestmark = pytest.mark.gpu

# (op, pattern, sparsity, N, K, permuted): M odd and not a multiple of 8, so ldx = M exercises the
# kernel's unaligned gather path exactly as a dense TensorRT tensor would
RUNTIME_CASES = [
    ("HiNMLinear", "hinm:vector=64", 0.75, 256, 320, False),
    ("HiNMLinear", "hinm:vector=32", 0.75, 160, 192, True),
    ("HiNMLinear", "nm", 0.5, 128, 256, False),
    ("TVWLinear", "tvw:tile=64", 0.75, 320, 448, False),
    ("TVWLinear", "tvw:tile=128,output_share=0.4", 0.8, 512, 256, False),
]


def _pattern(spec):
    from exporter import pattern_from_spec

    return pattern_from_spec(spec)


@pytest.mark.parametrize("op_type,spec,sparsity,n,k,permuted", RUNTIME_CASES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("m", [1, 37, 301])
@pytest.mark.parametrize("activation", ["none", "gelu"])
def test_plugin_runtime_matches_reference(op_type, spec, sparsity, n, k, permuted, dtype, m, activation, rng):
    from trt_plugins import launch

    fmt, bias = make_format(_pattern(spec), sparsity, n, k, dtype, rng, permute_rows=permuted, free_order=permuted)
    attrs = fields.make_attrs(op_type, out_features=n, in_features=k, tile_rows=fmt.tile_rows,
                              num_tiles=fmt.num_tiles, activation=activation)
    x = torch.randn(m, k, generator=rng).to(dtype)
    dev = fmt.to("cuda")
    xt = x.t().contiguous().cuda()                          # XT [K, M], dense: ldx = M
    y = torch.full((m, n), float("nan"), dtype=dtype, device="cuda")
    inputs = [plugin_runtime.from_torch(t) for t in (xt, dev.values, dev.meta, dev.k_index, dev.k_offsets,
                                                      dev.row_index, bias.cuda())]
    stream = torch.cuda.Stream()
    before = launch.LAUNCH_COUNT
    with torch.cuda.stream(stream):
        plugin_runtime.enqueue(inputs, plugin_runtime.from_torch(y), attrs, stream=stream.cuda_stream)
    stream.synchronize()
    assert launch.LAUNCH_COUNT == before + 1
    ref = fmt.matmul(x.double(), bias.double(), activation)
    got = y.double().cpu()
    assert torch.isfinite(got).all()
    err = float(torch.linalg.norm(got - ref) / torch.linalg.norm(ref))
    assert err <= REL_TOL[dtype], f"relative Frobenius error {err:.2e}"


def test_plugin_runtime_empty_batch():
    fmt, bias = make_format(_pattern("hinm:vector=64"), 0.75, 128, 128, torch.float16, torch.Generator().manual_seed(0))
    attrs = fields.make_attrs("HiNMLinear", out_features=128, in_features=128, tile_rows=64, num_tiles=fmt.num_tiles,
                              activation="none")
    dev = fmt.to("cuda")
    xt = torch.empty(128, 0, dtype=torch.float16, device="cuda")
    y = torch.empty(0, 128, dtype=torch.float16, device="cuda")
    inputs = [plugin_runtime.from_torch(t) for t in (xt, dev.values, dev.meta, dev.k_index, dev.k_offsets,
                                                      dev.row_index, bias.cuda())]
    plugin_runtime.enqueue(inputs, plugin_runtime.from_torch(y), attrs, stream=torch.cuda.current_stream().cuda_stream)


def _export_cases():
    from .export_cases import MODELS, PATTERNS

    return [(m, p) for m in MODELS for p in PATTERNS]


@pytest.mark.parametrize("model_name,pattern", _export_cases())
def test_validate_with_gpu_runner(model_name, pattern):
    pytest.importorskip("onnxscript", reason="the ONNX export needs onnxscript (add its wheel to the device kit)")
    import copy

    from trt_plugins import launch
    from trt_plugins.validate import validate

    from .export_cases import exported

    path, model = exported(model_name, pattern, "fp16")
    before = launch.LAUNCH_COUNT
    report = validate(path, copy.deepcopy(model), runners=["onnxrt", "torch"], device="cuda", batch=3, seq=37)
    assert report.passed, [(r.max_abs, r.max_rel) for r in report.rows]
    assert report.rows[0].runner == "torch-cuda"
    launches = launch.LAUNCH_COUNT - before
    if pattern == "tw":
        assert launches == 0          # dense tiles: no kernel, the reference math runs on the GPU
    else:
        assert launches > 0, "the GPU runner did not go through our kernels (pycuda or the kernels missing?)"


@pytest.mark.parametrize("spec", ["hinm:vector=64", "tvw:tile=64"])
def test_fused_permuted_encoder_on_cuda_matches_cpu(spec):
    """q, k, v fused into one sparse layer (N = 3 d_model; gyro's blocks may mix their rows) and run by
    our kernels in fp16 on the GPU: the model output agrees with the float32 CPU model (stated tolerance 1e-2
    relative Frobenius error: fp16 through two encoder blocks, attention and LayerNorm included)."""
    import copy

    from exporter import sparsify
    from exporter.permute import Gyro
    from exporter.zoo import Encoder
    from trt_plugins import launch

    torch.manual_seed(5)
    model = Encoder(d_model=256, heads=4, ffn=512, layers=2).eval()
    x = torch.randn(2, 37, 256)                                   # M = 74: a token tail
    report = sparsify(model, _pattern(spec), 0.75, permutation=Gyro(seed=0), fuse_siblings=True, progress=False)
    assert set(report.fused) == {"blocks.0.q_k_v.linear", "blocks.1.q_k_v.linear"}
    with torch.no_grad():
        ref = model(x).double()
        gpu = copy.deepcopy(model).half().cuda()
        before = launch.LAUNCH_COUNT
        y = gpu(x.half().cuda())
        torch.cuda.synchronize()
    assert launch.LAUNCH_COUNT - before == 8, "each block's q_k_v, o, fc1 and fc2 should launch our kernel once"
    err = ((y.cpu().double() - ref).norm() / ref.norm()).item()
    assert err < 1e-2, f"{spec}: fused encoder on CUDA differs from the CPU model by {err:.2e}"
