"""Model-level permutation: permute every selected layer, then make the permutations disappear.

A layer whose rows were permuted by σ computes y' = y[σ] if its weights and bias are permuted (and the
format's row_index is arange).  Two ways keep the model's function:

* absorbed — the layer keeps its outputs permuted and the ONE sparse layer that reads them (through
  elementwise ops only, e.g. fc1 → GELU → fc2) rewrites its kept-column indices idx ← σ⁻¹(idx).  The
  consumer gathers activations by index anyway, so nothing runs at inference time.
* restored — everywhere else (outputs feeding a residual add, LayerNorm, attention heads, a dense layer or
  the model output) the layer's compressed rows keep their original ids, so the kernel's output scatter
  (row_index = σ) writes every output feature back to its original position.

The producer → consumer pairs come from the graph (torch.export with example inputs, else torch.fx), or
are given explicitly; any output that is not provably safe to absorb is restored.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from ..graph import trace_linears
from ..masks import LayerMask
from ..modules import SparseLinear
from ..patterns import TW, HiNM, Pattern, PatternError, pattern_from_spec
from ..siblings import fuse_selected
from ._common import Deadline
from .config import PermutationConfig
from .layers import check_config, check_pattern, permute_hinm, permute_tw
from .result import PermutationReport, PermutationResult


# ---- which outputs can be absorbed ------------------------------------------------------------------------------
def _chain_pairs(nodes: Iterable, linear_of: Callable, is_elementwise: Callable) -> dict[str, str]:
    """producer → consumer where the producer's output reaches the consumer's input (only) through single-user
    elementwise nodes.  `linear_of(node)` names the Linear a node runs (or None)."""
    nodes = list(nodes)
    uses: dict[str, int] = {}
    for node in nodes:
        name = linear_of(node)
        if name is not None:
            uses[name] = uses.get(name, 0) + 1
    pairs: dict[str, str] = {}
    for node in nodes:
        producer = linear_of(node)
        if producer is None or uses[producer] != 1:
            continue
        cur = node
        while len(cur.users) == 1:
            nxt = next(iter(cur.users))
            consumer = linear_of(nxt)
            if consumer is not None:
                if uses[consumer] == 1 and nxt.args and nxt.args[0] is cur:
                    pairs[producer] = consumer
                break
            if not is_elementwise(nxt) or not nxt.args or nxt.args[0] is not cur:
                break
            cur = nxt
    return pairs


def absorbable_pairs(model: nn.Module, names: Iterable[str], example_inputs: Sequence | None = None) -> dict[str, str]:
    """{producer: consumer} among `names` whose permutation can be absorbed (see the module docstring).

    Traces with torch.export when example inputs are given, else with torch.fx; when tracing fails every
    output is restored by the scatter (correct, just no absorption) and a warning says why."""
    try:
        graph = trace_linears(model, names, example_inputs)
        return _chain_pairs(graph.nodes, graph.linear_of, graph.is_elementwise)
    except Exception as err:  # tracing arbitrary models can fail in many ways; restoring is always correct
        warnings.warn(f"permute: could not trace the model to find absorbable layer pairs ({type(err).__name__}: "
                      f"{str(err).splitlines()[0] if str(err) else ''}); every permuted output is restored by the "
                      "output scatter instead. Pass example_inputs=... or absorb={producer: consumer}.", stacklevel=3)
        return {}


# ---- permuting many layers --------------------------------------------------------------------------------------
def _hinm_job(args: tuple) -> PermutationResult:
    scores, pattern, sparsity, config, name, budget = args
    return permute_hinm(scores, pattern, sparsity, config, name=name, deadline=Deadline(budget))


def permute_scores(scores: Mapping[str, torch.Tensor], pattern: Pattern | str | dict, sparsity: float,
                   config: PermutationConfig | None = None, *, progress: bool = True,
                   workers: int = 1) -> dict[str, PermutationResult]:
    """Permute every layer of {name: saliency [N, K]}.  HiNM layers are independent (and can run in
    `workers` processes); TVW/TW layers are searched together because their selection is global.
    `config.time_budget_s` is shared: each HiNM layer gets the remaining budget × its share of the weights."""
    from tqdm.auto import tqdm

    pattern = pattern_from_spec(pattern)
    config = check_config(config)
    if not isinstance(workers, int) or workers < 1:
        raise PatternError(f"workers must be a positive integer, got {workers!r}")
    for name, s in scores.items():
        check_pattern(name, pattern, tuple(s.shape), sparsity)
    if isinstance(pattern, TW):
        return permute_tw(scores, pattern, sparsity, config, progress=progress)
    assert isinstance(pattern, HiNM)
    names = list(scores)
    sizes = {n: scores[n].numel() for n in names}
    total = Deadline(config.time_budget_s)
    out: dict[str, PermutationResult] = {}
    bar = tqdm(total=len(names), desc=f"{config.name} {pattern.describe()}", unit="layer", disable=not progress)

    def budget(remaining_names: list[str], name: str) -> float | None:
        left = total.remaining()
        if left is None:
            return None
        return max(1e-3, left * sizes[name] / max(1, sum(sizes[n] for n in remaining_names)))

    if workers == 1:
        for i, name in enumerate(names):
            out[name] = permute_hinm(scores[name], pattern, sparsity, config, name=name, progress=progress,
                                     deadline=Deadline(budget(names[i:], name)))
            bar.update(1)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # static budget shares (processes cannot see each other's progress); largest layers first
        order = sorted(names, key=lambda n: -sizes[n])
        jobs = [(scores[n].detach().cpu(), pattern, sparsity, config, n, budget(names, n)) for n in order]
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for res in pool.map(_hinm_job, jobs):
                out[res.name] = res
                bar.update(1)
        out = {n: out[n] for n in names}
    bar.close()
    return out


# ---- swapping modules ---------------------------------------------------------------------------------------------
def _inverse(perm: torch.Tensor) -> torch.Tensor:
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel())
    return inv


def sparse_module(linear: nn.Linear, result: PermutationResult, *, out_perm: torch.Tensor | None = None,
                  in_perm: torch.Tensor | None = None, dtype: torch.dtype | None = None,
                  pattern: str = "tilesparse") -> SparseLinear:
    """SparseLinear for a permuted layout.  out_perm (σ): keep outputs permuted (y' = y[σ]); in_perm (σ_in):
    the input arrives permuted (x' = x[σ_in]), absorbed by rewriting kept indices idx ← σ_in⁻¹(idx)."""
    weight, bias = linear.weight.detach(), None if linear.bias is None else linear.bias.detach()
    mask, rows, cols = result.mask, result.rows, list(result.cols)
    if out_perm is not None:
        weight, mask = weight[out_perm], mask[out_perm]
        bias = None if bias is None else bias[out_perm]
        rows = _inverse(out_perm)[rows]
    if in_perm is not None:
        weight, mask = weight[:, in_perm], mask[:, in_perm]
        inv = _inverse(in_perm)
        cols = [inv[c] for c in cols]
    tmp = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        tmp.weight.copy_(weight)
        if bias is not None:
            tmp.bias.copy_(bias)
    lm = LayerMask(result.name, mask, result.sparsity, rows, cols, result.two_four)
    return SparseLinear.from_linear(tmp, lm, dtype=dtype or linear.weight.dtype, pattern=pattern, name=result.name)


def apply_permuted(model: nn.Module, layers: Mapping[str, nn.Module], results: Mapping[str, PermutationResult],
                   pairs: Mapping[str, str], pattern: Pattern, dtype: torch.dtype | None = None) -> dict[str, str]:
    """Swap each layer for its SparseLinear, absorbing `pairs` (producer → consumer).  Returns how every
    layer's output order is handled ('absorbed by …' or 'restored by row_index')."""
    for producer, consumer in pairs.items():
        if producer not in results or consumer not in results:
            raise PatternError(f"absorb: '{producer}' → '{consumer}': both layers must be permuted in this call")
        if layers[producer].weight.shape[0] != layers[consumer].weight.shape[1]:
            raise PatternError(f"absorb: '{producer}' has {layers[producer].weight.shape[0]} outputs but "
                               f"'{consumer}' reads {layers[consumer].weight.shape[1]} inputs")
    fed_by = {c: p for p, c in pairs.items()}
    if len(fed_by) != len(pairs):
        raise PatternError("absorb: a consumer layer can absorb the outputs of only one producer")
    handling = {}
    for name, result in results.items():
        out_perm = result.output_order if name in pairs else None
        in_perm = results[fed_by[name]].output_order if name in fed_by else None
        new = sparse_module(layers[name], result, out_perm=out_perm, in_perm=in_perm, dtype=dtype,
                            pattern=pattern.describe())
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, new)
        handling[name] = f"absorbed by {pairs[name]}" if name in pairs else "restored by row_index"
    return handling


def permute_model(model: nn.Module, pattern: Pattern | str | dict, sparsity: float,
                  config: PermutationConfig | None = None, *, include: Sequence[str] = ("*",), exclude: Sequence[str] = (),
                  saliency: str = "magnitude", data: Iterable | None = None, loss_fn: Callable | None = None,
                  max_batches: int | None = None, absorb: str | Mapping[str, str] = "auto",
                  example_inputs: Sequence | None = None, dtype: torch.dtype | None = None, workers: int = 1,
                  progress: bool = True, fuse_siblings: bool | Sequence[Sequence[str]] = False) -> PermutationReport:
    """Prune and permute the selected nn.Linear layers of `model` in place (they become SparseLinear).

    absorb: 'auto' (trace the model: torch.export with `example_inputs`, else torch.fx), 'none' (restore
    every output by the scatter) or an explicit {producer: consumer} mapping you vouch for.  The model
    computes the same function as the unpermuted model with the same kept weights.  fuse_siblings: as in
    `sparsify` (fuse layers reading the same input first; traced with `example_inputs` when given)."""
    from ..sparsify import compute_scores, select_layers

    start = time.perf_counter()
    pattern = pattern_from_spec(pattern)
    layers = select_layers(model, include, exclude)
    if not layers:
        raise PatternError(f"no nn.Linear layer matches include={list(include)} exclude={list(exclude)}")
    layers, _ = fuse_selected(model, layers, fuse_siblings, example_inputs)
    scores = compute_scores(model, layers, saliency, data, loss_fn, max_batches, progress)
    results = permute_scores(scores, pattern, sparsity, config, progress=progress, workers=workers)
    if absorb == "auto":
        pairs = absorbable_pairs(model, layers, example_inputs)
    elif absorb in ("none", None):
        pairs = {}
    elif isinstance(absorb, Mapping):
        pairs = dict(absorb)
    else:
        raise PatternError(f"absorb must be 'auto', 'none' or a {{producer: consumer}} mapping, got {absorb!r}")
    handling = apply_permuted(model, layers, results, pairs, pattern, dtype)
    return PermutationReport(pattern.describe(), check_config(config).name, sparsity, list(results.values()),
                             handling, time.perf_counter() - start)
