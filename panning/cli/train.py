"""`panning train`: train a model on a data set with its recipe, optionally under a fixed mask; print a table.

    panning train --data digits --epochs 5 --save digits.safetensors
    panning train --data mnist1d --masks masks.safetensors --checkpoint run.pt
"""
from __future__ import annotations

from pathlib import Path

from . import options as o
from .options import Option

HELP = "train a model on a data set (optionally with a fixed mask from --masks)"
OPTIONS = (
    o.ANY_DATA, o.DATA_DIR, o.DATA_KWARGS, o.ANY_MODEL, o.MODEL_KWARGS, o.WIDTH, o.EPOCHS, o.BATCH_SIZE, o.LR,
    o.MOMENTUM, o.WEIGHT_DECAY,
    Option("optimizer", str, "sgd or adam; default: the model's recipe"),
    o.SEED,
    o.MASKS.but(help="train under this fixed mask (a masks file from panning prune or panning jackpot)"),
    Option("mode", str, "path of the masked layers: auto (per layer, from panning.nn's cost model; a compressed "
           "convolution picks its kernel per call), masked or compressed; default auto"),
    Option("checkpoint", Path, "checkpoint file, written every epoch; an existing one is resumed",
           check=o.output_file),
    Option("save", Path, "write the trained model here (safetensors, for panning.models.load and panning evaluate)",
           check=o.output_file),
    o.DEVICE, o.THREADS, o.PROGRESS,
)
_RECIPE_KEYS = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "optimizer")


def resume_hint(opts: dict) -> str | None:
    if opts.get("checkpoint") is None:
        return "no --checkpoint was given, so nothing is kept; give one to make a run resumable"
    return f"run the same command again to resume from {opts['checkpoint']}"


def run(opts: dict) -> int:
    """Build the model, check the masks and checkpoint against it, train with its recipe, print a table."""
    from .. import models
    from ..io import WriteError, load_tensors
    from ..train import Diverged, train
    from .tables import print_row

    o.distinct_files(opts, "checkpoint", "save")
    recipe = o.recipe_for(opts, _RECIPE_KEYS, seed=opts["seed"], **({"mode": opts["mode"]} if opts["mode"] else {}))
    if opts["momentum"] is not None and recipe.optimizer != "sgd":
        raise o.UsageError(f"--momentum: has no effect with the {recipe.optimizer} optimizer (the "
                           f"{'--optimizer' if opts['optimizer'] else 'recipe'}'s); give --optimizer sgd to use it")
    masks = o.load_masks("--masks", opts["masks"]) if opts["masks"] is not None else None
    if opts["checkpoint"] is not None and opts["checkpoint"].exists():
        load_tensors(opts["checkpoint"], name="--checkpoint")  # a readable, safe file; train checks its content
    model_name = o.model_for(opts)
    bundle = o.load_data(opts)
    model = o.build_model(opts, bundle)
    if masks is not None:
        o.masks_fit("--masks", masks, model, o.made_for(opts, model_name, bundle))
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    for key, copies in (("save", 1), ("checkpoint", 4)):  # a checkpoint: weights, optimizer moments, masks
        if opts[key] is not None:
            o.room_for(f"--{key}", opts[key], copies * size)
    try:  # a checkpoint of another run is refused before the first step, named as --checkpoint
        result = train(model, bundle, recipe, masks=masks, device=opts["device"], checkpoint=opts["checkpoint"],
                       progress=opts["progress"])
    except Diverged as error:
        kept = (f"; the checkpoint {str(opts['checkpoint'])!r} holds the last good epoch" if opts["checkpoint"]
                and opts["checkpoint"].exists() else "")
        raise Diverged(f"{error}{kept}; --save was not written" if opts["save"] else f"{error}{kept}") from None
    if opts["save"] is not None:
        try:
            models.save(opts["save"], model, name=model_name, input_shape=bundle.input_shape,
                        num_classes=bundle.num_classes, width=opts["width"], data=bundle.name, seed=opts["seed"],
                        test_acc=result.test_acc)
        except WriteError as error:
            kept = (f"the trained model is in the checkpoint {str(opts['checkpoint'])!r}: run the same command "
                    "again, with space, to write it" if opts["checkpoint"] is not None else
                    "the trained model is lost (--checkpoint keeps a run to write it again)")
            raise WriteError(f"{error}; {kept}") from None
    print_row("panning train", {
        "data": bundle.name,
        "model": model_name + ("" if opts["width"] == 1.0 else f" x{opts['width']:g}"),
        "params": f"{sum(p.numel() for p in model.parameters()):,}",
        "sparsity": f"{masks.sparsity:.2%}" if masks is not None else "dense",
        "epochs": str(result.epochs),
        "test loss": f"{result.test_loss:.4f}",
        "test acc": f"{100 * result.test_acc:.2f}%",
        "time": f"{result.wall_time:.1f} s",
    })
    if result.paths:
        print("layer paths: " + ", ".join(f"{name} {path}" for name, path in result.paths.items()))
    if opts["save"] is not None:
        use = (f"panning evaluate --weights {opts['save']}" if o.own_model(opts)
               else f"panning jackpot --model {model_name} --weights {opts['save']}")
        print(f"model saved to {opts['save']} ({use})")
    return 0
