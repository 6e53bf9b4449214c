"""`panning prune`: prune a freshly initialized model before training, report, save the masks, optionally train.

    panning prune --data mnist1d --method panning --sparsity 0.98 --out masks.safetensors --train
"""
from __future__ import annotations

from pathlib import Path

from . import options as o
from .options import Option, boolean, made_for

HELP = "prune a network before training (Panning, SNIP, GraSP, SynFlow, ...) and save the masks"
OPTIONS = (
    o.ANY_DATA, o.DATA_DIR, o.DATA_KWARGS, o.ANY_MODEL, o.MODEL_KWARGS, o.WIDTH,
    Option("method", str, "pruning method (panning.pbt.METHODS)", "panning"),
    o.SPARSITY, o.SEED,
    Option("iterations", int, "steps of the iterative methods; default: the method's"),
    Option("per-class", int, "samples per class in each pruning batch; default: the method's"),
    Option("agent", Path, "rl_panning: a trained agent, its path without suffix (panning agent --out)"),
    Option("keep-classifier", boolean, "leave the last layer dense", False),
    Option("out", Path, "where to save the masks (safetensors; .pt for a torch file)", Path("masks.safetensors"),
           check=o.output_file),
    Option("train", boolean, "then train the pruned network and print its test accuracy", False),
    o.EPOCHS.but(help="with --train: training epochs; default: the model's recipe (panning.train.RECIPES)",
                 requires="train"),
    o.DEVICE, o.THREADS, o.PROGRESS.but(help="progress bars, on a terminal"),
)
_METHOD_OPTIONS = ("iterations", "per_class", "agent")


def run(opts: dict) -> int:
    """Prune, print per-layer density and effective sparsity, save the masks; with --train, train and test."""
    import time

    from ..arena import Arena, except_last, prunable
    from ..connectivity import collapse_report
    from ..masks import Masks
    from ..pbt.entry import prune
    from ..pbt.methods import PruneConfig
    from ..sparsity import kept_weights

    # what the pruning does, checked before any work: a refused field is named as its option (--per-class ...)
    config = PruneConfig(method=opts["method"], sparsity=opts["sparsity"], seed=opts["seed"],
                         **{key: opts[key] for key in _METHOD_OPTIONS if opts[key] is not None})
    model_name = o.model_for(opts)
    recipe = o.recipe_for(opts, ("epochs",), seed=opts["seed"]) if opts["train"] else None  # checked: before any work
    bundle = o.load_data(opts)
    model = o.build_model(opts, bundle).to(opts["device"])
    if opts["agent"] is not None:  # after models.build has checked --width, which the agent is compared with
        o.agent_fits("--agent", opts["agent"], model=model_name, width=opts["width"], data=opts["data"])
    include = except_last(model) if opts["keep_classifier"] else prunable
    kept_weights(model, opts["sparsity"], include=include, name="--sparsity")
    o.room_for("--out", opts["out"], Arena(model, include=include, share=False).numel)  # one byte a mask entry
    started = time.perf_counter()
    masks = prune(model, config.method, config.sparsity, bundle, seed=config.seed, include=include,
                  progress=opts["progress"], **config.given)
    seconds = time.perf_counter() - started
    print(f"{opts['method']} on {model_name} / {bundle.name}, seed {opts['seed']}: pruned in {seconds:.2f} s")
    print(format_report(collapse_report(model, masks, bundle.input_shape),
                        {name: m.numel() for name, m in masks.items()}))
    masks = Masks(masks, made_for(opts, model_name, bundle))
    masks.save(opts["out"])
    print(f"masks saved to {opts['out']}")
    if opts["train"]:
        from ..train import train

        trained = train(model, bundle, recipe, masks=masks, device=opts["device"], progress=opts["progress"])
        epochs = f"{trained.epochs} epoch" + ("s" if trained.epochs != 1 else "")
        print(f"test accuracy after {epochs}: {trained.test_acc:.2%} (trained in {trained.wall_time:.1f} s)")
    return 0


def format_report(result, sizes: dict[str, int]) -> str:
    """A per-layer table (weights, density, effective density) and the totals of a
    panning.connectivity.CollapseReport."""
    width = max(len("layer"), *(len(name) for name in sizes))
    lines = [f"{'layer':<{width}}  {'weights':>9}  {'density':>8}  {'effective':>9}"]
    for name, size in sizes.items():
        density, effective = result.density[name], result.effective_density[name]
        lines.append(f"{name:<{width}}  {size:>9}  {density:>8.4f}  {effective:>9.4f}")
    lines.append(f"sparsity {result.sparsity:.4f}, effective sparsity {result.effective_sparsity:.4f}, "
                 f"collapsed layers: {', '.join(result.collapsed) or 'none'}")
    return "\n".join(lines)
