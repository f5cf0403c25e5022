"""`sparsetrt export | build | validate`: the deployment half of the command line.

Exit codes (exporter/cli.py): 0 ok, 1 validation mismatch, 2 bad input (a layer that cannot be exported,
a corrupted ONNX file, wrong attributes, a parse failure), 3 a missing optional dependency (TensorRT, GPU).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

from .cli import EXIT_BAD_INPUT, EXIT_MISMATCH, EXIT_MISSING_DEP, EXIT_OK


class CLIError(Exception):
    """Handled here rather than by exporter.cli.main, so the exit code is right also under
    `python -m exporter.cli` (where main's CLIError is __main__.CLIError, a different class)."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.code = code


def _exits(func):
    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except CLIError as err:
            print(f"sparsetrt {args.command}: error: {err}", file=sys.stderr)
            return err.code
    return run

DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
          "bfloat16": "bfloat16", "bf16": "bfloat16"}


def _console():
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=160)


def _dtype(name: str):
    import torch

    if name not in DTYPES:
        raise CLIError(f"--dtype {name}: expected one of {sorted(DTYPES)}")
    return getattr(torch, DTYPES[name])


def _range(text: str) -> tuple[int, int, int]:
    try:
        lo, opt, hi = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN,OPT,MAX (three integers), got {text!r}") from None
    return lo, opt, hi


# ---- export -------------------------------------------------------------------------------------------
@_exits
def cmd_export(args: argparse.Namespace) -> int:
    import torch

    from . import zoo
    from .checkpoint import load_model
    from .onnx_export import export_onnx

    ckpt = Path(args.checkpoint)
    model, spec = load_model(ckpt)
    dtype = _dtype(args.dtype)
    model = model.to(dtype)
    torch.manual_seed(args.seed)
    example = zoo.example_input(spec["zoo"], model, batch=args.batch, seq=args.seq).to(dtype)
    out = Path(args.output)
    meta = {"checkpoint": str(ckpt.resolve()), "dtype": DTYPES[args.dtype], "zoo": spec["zoo"]}
    proto = export_onnx(model, example, out, metadata=meta, check=not args.no_check)
    if not args.quiet:
        _print_layers(proto)
    checked = "" if args.no_check else ", onnx.checker (full) and shape inference passed"
    print(f"wrote {out} ({sum(n.domain == 'sparsetrt' for n in proto.graph.node)} sparse nodes, {DTYPES[args.dtype]}"
          f"{checked})")
    return EXIT_OK


def _print_layers(proto) -> None:
    from rich.table import Table

    info = json.loads({p.key: p.value for p in proto.metadata_props}.get("sparsetrt.layers", "{}"))
    table = Table(title="sparse layers → sparsetrt custom nodes")
    for col in ("layer", "op", "pattern", "N×K", "tiles", "dtype", "plugin"):
        table.add_column(col)
    from trt_plugins.fields import OPS

    for name, layer in info.items():
        plugin = "yes" if OPS[layer["op"]].has_plugin else "no (local function)"
        table.add_row(name, layer["op"], layer["pattern"], "×".join(map(str, layer["shape"])), str(layer["tiles"]),
                      layer["dtype"], plugin)
    _console().print(table)


# ---- build --------------------------------------------------------------------------------------------
@_exits
def cmd_build(args: argparse.Namespace) -> int:
    from trt_plugins import TensorRTUnavailable
    from trt_plugins.build import BuildError, build_engine

    ranges = {k: v for k, v in (("batch", args.batch), ("seq", args.seq)) if v is not None}
    out = Path(args.output) if args.output else Path(args.model).with_suffix(".engine")
    try:
        result = build_engine(args.model, out, plugins=not args.no_plugins, backend=args.backend, ranges=ranges,
                              plugin_impl=args.plugin_impl, workspace_mb=args.workspace_mb, verbose=args.verbose)
    except TensorRTUnavailable as err:
        raise CLIError(str(err), EXIT_MISSING_DEP) from None
    except BuildError as err:
        raise CLIError(str(err), EXIT_BAD_INPUT) from None
    for note in result.notes:
        print(f"note: {note}")
    profile = ", ".join(f"{k}: min {v[0]} opt {v[1]} max {v[2]}" for k, v in result.profile.items())
    plugins = ", ".join(result.plugins) or "none (local functions inlined)"
    print(f"wrote {out} ({len(result.engine) / 2**20:.1f} MiB, {result.backend}, plugins: {plugins}; profile {profile})")
    return EXIT_OK


# ---- validate -----------------------------------------------------------------------------------------
def _source_model(args: argparse.Namespace, onnx_path: Path):
    """The PyTorch model the file came from: --checkpoint, else the checkpoint recorded at export."""
    import onnx

    from .checkpoint import load_model

    meta = {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props}
    ckpt = args.checkpoint or meta.get("sparsetrt.checkpoint")
    if not ckpt:
        return None, "no checkpoint given or recorded in the file: the PyTorch runner is skipped"
    if not Path(ckpt).is_file():
        if args.checkpoint:
            raise CLIError(f"--checkpoint {ckpt}: no such file")
        return None, f"the recorded checkpoint {ckpt} is gone: the PyTorch runner is skipped (pass --checkpoint)"
    model, _ = load_model(ckpt)
    dtype = meta.get("sparsetrt.dtype")
    return (model.to(_dtype(dtype)) if dtype else model), None


@_exits
def cmd_validate(args: argparse.Namespace) -> int:
    from trt_plugins import TensorRTUnavailable, tensorrt_version
    from trt_plugins.build import BuildError
    from trt_plugins.validate import ValidationError, validate

    from .onnx_inspect import sparse_nodes

    path = Path(args.model)
    sparse_nodes(path)   # a corrupted or wrong file is bad input before any runner starts
    model, note = _source_model(args, path)
    runners = args.runners.split(",") if args.runners else None
    if runners and "tensorrt" in runners and tensorrt_version() is None:
        raise CLIError("--runners tensorrt: TensorRT is not installed", EXIT_MISSING_DEP)
    if runners is None:
        runners = ["onnxrt"] + (["torch"] if model is not None else []) + \
                  (["tensorrt"] if tensorrt_version() is not None else [])
    if len(runners) < 2:
        raise CLIError(f"nothing to compare ONNX Runtime with ({note}); pass --checkpoint", EXIT_BAD_INPUT)
    try:
        report = validate(path, model, runners=runners, device=args.device, batch=args.batch, seq=args.seq,
                          iterations=args.iterations, seed=args.seed, atol=args.atol, rtol=args.rtol,
                          plugins=not args.no_plugins, verbose=args.verbose)
    except (TensorRTUnavailable, ValidationError) as err:
        raise CLIError(str(err), EXIT_MISSING_DEP) from None
    except BuildError as err:
        raise CLIError(str(err), EXIT_BAD_INPUT) from None
    if note:
        report.notes.insert(0, note)
    if not args.quiet:
        _console().print(report.table())
        for line in report.notes:
            print(f"note: {line}")
    if args.report_json:
        Path(args.report_json).write_text(json.dumps(report.to_dict(), indent=2))
    shapes = ", ".join(f"{k}{list(v)}" for k, v in report.shapes.items())
    verdict = "PASS" if report.passed else "FAIL"
    print(f"{verdict}: {' vs '.join(report.runners)} on {shapes}, {args.iterations} iteration(s)")
    return EXIT_OK if report.passed else EXIT_MISMATCH


# ---- parser -------------------------------------------------------------------------------------------
def register(sub) -> None:
    """Add `export`, `build` and `validate` to the `sparsetrt` subcommands."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("export", help="export a pruned checkpoint to ONNX (sparsetrt custom nodes + local functions)",
                       formatter_class=fmt, epilog=(
                           "examples:\n  sparsetrt export out/mlp.sparse.safetensors -o out/mlp.onnx\n"
                           "  sparsetrt export out/enc.sparse.safetensors --dtype fp16 -o out/enc.fp16.onnx"))
    p.add_argument("checkpoint", help="checkpoint written by `sparsetrt prune`")
    p.add_argument("-o", "--output", default="out/model.onnx", help="ONNX file to write (default out/model.onnx)")
    p.add_argument("--dtype", default="float32", help="float32 | float16 | bfloat16 (the plugins run fp16/bf16)")
    p.add_argument("--batch", type=int, default=2, help="example batch size (the exported dim is dynamic)")
    p.add_argument("--seq", type=int, default=16, help="example sequence length for the encoder (dynamic)")
    p.add_argument("--seed", type=int, default=0, help="seed of the example input")
    p.add_argument("--no-check", action="store_true", help="skip onnx.checker and shape inference")
    p.add_argument("-q", "--quiet", action="store_true", help="no layer table")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("build", help="build a TensorRT engine (plugins registered, dynamic-shape profile)",
                       formatter_class=fmt, epilog=(
                           "examples:\n  sparsetrt build out/enc.fp16.onnx -o out/enc.engine --batch 1,8,32 --seq 1,128,512\n"
                           "  sparsetrt build out/enc.onnx --no-plugins              # TensorRT inlines the reference\n"
                           "  sparsetrt build out/enc.onnx --backend tensorrt_rtx --no-plugins   # parser check, no GPU"))
    p.add_argument("model", help="ONNX file written by `sparsetrt export`")
    p.add_argument("-o", "--output", help="engine file (default: the model path with .engine)")
    p.add_argument("--batch", type=_range, help="MIN,OPT,MAX of the batch dim (default 1,8,32)")
    p.add_argument("--seq", type=_range, help="MIN,OPT,MAX of the sequence dim (default 1,128,512)")
    p.add_argument("--no-plugins", action="store_true", help="do not register the plugins: TensorRT inlines the local functions")
    p.add_argument("--backend", choices=["tensorrt", "tensorrt_rtx"], default="tensorrt",
                   help="tensorrt (default) or tensorrt_rtx (no plugin support)")
    p.add_argument("--plugin-impl", choices=["auto", "aot", "jit"], default="auto",
                   help="AOT (PTX in the engine, no Python at run time) or JIT (Python launch); auto = AOT when available")
    p.add_argument("--workspace-mb", type=int, help="builder workspace limit in MiB")
    p.add_argument("-v", "--verbose", action="store_true", help="TensorRT's verbose log")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("validate", help="compare ONNX Runtime, the PyTorch model and TensorRT with Polygraphy",
                       formatter_class=fmt, epilog=(
                           "examples:\n  sparsetrt validate out/mlp.onnx                 # checkpoint recorded at export\n"
                           "  sparsetrt validate out/enc.fp16.onnx --device cuda --batch 4 --seq 37\n"
                           "  sparsetrt validate out/enc.onnx --runners onnxrt,torch --report-json out/val.json\n"
                           "exit codes: 0 pass, 1 mismatch, 2 bad input, 3 missing TensorRT/GPU"))
    p.add_argument("model", help="ONNX file written by `sparsetrt export`")
    p.add_argument("--checkpoint", help="source checkpoint (default: the one recorded in the file)")
    p.add_argument("--runners", help="comma list of onnxrt,torch,tensorrt (default: all available; onnxrt is the reference)")
    p.add_argument("--device", default="auto", help="device of the PyTorch runner: auto | cpu | cuda[:i]")
    p.add_argument("--batch", type=int, default=3, help="batch size of the random inputs (default 3)")
    p.add_argument("--seq", type=int, default=5, help="sequence length of the random inputs (default 5)")
    p.add_argument("--iterations", type=int, default=2, help="random input sets (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--atol", type=float, help="absolute tolerance (default per dtype: fp32 1e-5, fp16 1e-2, bf16 6e-2)")
    p.add_argument("--rtol", type=float, help="relative tolerance (same defaults)")
    p.add_argument("--no-plugins", action="store_true", help="TensorRT runner without our plugins")
    p.add_argument("--report-json", help="also write the comparison rows as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no table")
    p.add_argument("-v", "--verbose", action="store_true", help="Polygraphy's own log")
    p.set_defaults(func=cmd_validate)
