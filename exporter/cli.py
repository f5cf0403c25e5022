"""`sparsetrt` command line.  Exit codes: 0 success, 1 validation mismatch, 2 bad input or usage,
3 a required optional dependency (TensorRT, a GPU) is missing."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .permute import ChannelSwap, Gyro, RandomRestarts

EXIT_OK, EXIT_MISMATCH, EXIT_BAD_INPUT, EXIT_MISSING_DEP = 0, 1, 2, 3


class CLIError(Exception):
    def __init__(self, message: str, code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.code = code


def _load_config(path: str) -> dict:
    text = Path(path).read_text()
    if path.endswith((".yaml", ".yml")):
        import yaml

        data = yaml.safe_load(text)
    elif path.endswith(".toml"):
        import tomllib

        data = tomllib.loads(text)
    else:
        raise CLIError(f"--config {path}: expected a .yaml, .yml or .toml file")
    if not isinstance(data, dict):
        raise CLIError(f"--config {path}: expected a mapping at the top level")
    return data


PRUNE_KEYS = {"model", "model_args", "pattern", "sparsity", "include", "exclude", "seed", "output", "saliency",
              "fuse_siblings", "permute", "permute_budget_s"}
# --permute: the configs' own names (exporter.permute: Gyro and the baselines it is measured against); "none" runs no
# permutation search at all
_PERMUTATION_CONFIGS = {cls.name: cls for cls in (Gyro, ChannelSwap, RandomRestarts)}
PERMUTATIONS = ("none", *_PERMUTATION_CONFIGS)


def _permutation(name: object, budget: object, seed: int):
    """The --permute choice as an exporter.permute config (None for "none")."""
    if name not in PERMUTATIONS:
        raise CLIError(f"permute: expected one of {list(PERMUTATIONS)}, got {name!r}")
    # the configs check their budget too; this names the option the user set
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget <= 0):
        raise CLIError(f"permute_budget_s: expected a positive number of seconds, got {budget!r}")
    if name == "none":
        return None
    return _PERMUTATION_CONFIGS[name](seed=seed, time_budget_s=None if budget is None else float(budget))


def cmd_prune(args: argparse.Namespace) -> int:
    import torch

    from . import checkpoint, sparsify, zoo

    cfg = _load_config(args.config) if args.config else {}
    unknown = set(cfg) - PRUNE_KEYS
    if unknown:
        raise CLIError(f"--config {args.config}: unknown key(s) {sorted(unknown)}; expected {sorted(PRUNE_KEYS)}")
    get = lambda key, default: getattr(args, key) if getattr(args, key) is not None else cfg.get(key, default)  # noqa: E731
    model_name, model_args = get("model", "mlp"), get("model_args", {})
    if isinstance(model_args, str):
        model_args = json.loads(model_args)
    seed = int(get("seed", 0))
    torch.manual_seed(seed)
    model = zoo.build(model_name, **model_args).eval()
    pattern, sparsity = get("pattern", "hinm"), float(get("sparsity", 0.75))
    fuse, permute = get("fuse_siblings", False), get("permute", "none")
    if not isinstance(fuse, bool):
        raise CLIError(f"--config {args.config}: fuse_siblings must be true or false, got {fuse!r}")
    report = sparsify(model, pattern, sparsity, include=get("include", None) or ["*"],
                      exclude=get("exclude", None) or [], progress=not args.quiet, fuse_siblings=fuse,
                      permutation=_permutation(permute, get("permute_budget_s", None), seed))
    if not args.quiet:
        report.print()
    out = Path(get("output", "out/model.sparse.safetensors"))
    out.parent.mkdir(parents=True, exist_ok=True)
    spec = {"zoo": model_name, "kwargs": model_args, "pattern": str(pattern), "sparsity": sparsity, "permute": permute}
    if report.fused:   # load_model fuses the rebuilt model's siblings the same way before placing the layers
        spec["fused"] = report.fused
    checkpoint.save_model(model, out, spec)
    if args.report_json:
        Path(args.report_json).write_text(json.dumps(report.to_dict(), indent=2))
    print(f"wrote {out} ({report.pattern}, achieved sparsity {report.achieved:.2%})")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sparsetrt", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Prune PyTorch models into TW/TVW/HiNM sparsity, export to ONNX, build and validate.",
        epilog="examples:\n  sparsetrt prune --model mlp --pattern hinm:vector=64 --sparsity 0.75 -o out/mlp.sparse.safetensors\n"
               "  sparsetrt prune --config prune.yaml")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prune", help="prune a built-in model and write a compressed checkpoint",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  sparsetrt prune --model encoder --pattern tvw:tile=64 --sparsity 0.75\n"
                              "  sparsetrt prune --model encoder --pattern hinm:vector=64 --permute gyro --fuse-siblings\n"
                              "  sparsetrt prune --config prune.yaml   # keys: " + ", ".join(sorted(PRUNE_KEYS)))
    p.add_argument("--model", choices=["mlp", "encoder"], help="built-in model (default mlp)")
    p.add_argument("--model-args", dest="model_args", help='JSON constructor arguments, e.g. \'{"d_model": 128}\'')
    p.add_argument("--pattern", help="hinm[:vector=64] | tvw[:tile=128] | tw[:tile=128] | nm | block[:b=32] | unstructured")
    p.add_argument("--sparsity", type=float, help="target sparsity (default 0.75)")
    p.add_argument("--include", nargs="*", help="glob(s) of layer names to prune (default all nn.Linear)")
    p.add_argument("--exclude", nargs="*", help="glob(s) of layer names to keep dense")
    p.add_argument("--seed", type=int, help="random seed for the model's initial weights (default 0)")
    p.add_argument("--config", help="YAML or TOML file with the same keys; command-line options win")
    p.add_argument("--fuse-siblings", dest="fuse_siblings", action=argparse.BooleanOptionalAction,
                   help="fuse layers that read the same input (an encoder's q, k, v) into one sparse layer "
                        "(default off)")
    p.add_argument("--permute", choices=PERMUTATIONS,
                   help="permutation search before the masks (HiNM/TVW/TW): gyro, or a baseline (default none)")
    p.add_argument("--permute-budget", dest="permute_budget_s", type=float, metavar="SECONDS",
                   help="wall-time budget of the permutation search, all layers together (default none)")
    p.add_argument("-o", "--output", help="checkpoint to write (default out/model.sparse.safetensors)")
    p.add_argument("--report-json", help="also write the per-layer sparsity report as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or table")
    p.set_defaults(func=cmd_prune)
    __import__(f"{__package__}.cli_deploy", fromlist=["register"]).register(sub)  # export, build, validate
    __import__(f"{__package__}.cli_tools", fromlist=["register"]).register(sub)   # bench, report
    return parser


def main(argv: list[str] | None = None) -> int:
    from .formats import FormatError
    from .patterns import PatternError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CLIError as err:
        print(f"sparsetrt {args.command}: error: {err}", file=sys.stderr)
        return err.code
    except (PatternError, FormatError, ValueError, FileNotFoundError) as err:
        print(f"sparsetrt {args.command}: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
