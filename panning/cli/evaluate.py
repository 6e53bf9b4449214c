"""`panning evaluate`: test loss and accuracy of a saved model, optionally under a masks file.

    panning train --data digits --save digits.safetensors
    panning prune --data digits --out masks.safetensors
    panning evaluate --weights digits.safetensors --masks masks.safetensors

The data set (and the seed of its split) default to those the model was trained on, as saved in the file.
"""
from __future__ import annotations

from pathlib import Path

from . import options as o
from .options import Option

HELP = "test loss and accuracy of a saved model (panning train --save), optionally under a masks file"
OPTIONS = (
    Option("weights", Path, "the model file written by panning train --save (required)"),
    o.MASKS.but(help="apply this masks file (panning prune --out, panning jackpot) before evaluating"),
    o.DATA.but(default=None, help="data set; default: the one the model was trained on"),
    o.DATA_DIR,
    o.SEED.but(default=None, help="seed of the data split; default: the one the model was trained with"),
    Option("batch-size", int, "evaluation batch size", 1000),  # checked by panning.train.evaluate, before its work
    o.DEVICE, o.THREADS,
)


def run(opts: dict) -> int:
    from .. import models
    from ..train import evaluate
    from .tables import print_row

    if opts["weights"] is None:
        raise o.UsageError("--weights: required (a model file written by panning train --save)")
    spec = models.read_spec(opts["weights"], name="--weights")
    if spec["name"] not in models.available():
        raise o.UsageError(f"--weights: holds a {spec['name']} model; panning evaluate rebuilds panning's own models "
                           f"only ({', '.join(models.available())})")
    masks = o.load_masks("--masks", opts["masks"]) if opts["masks"] is not None else None
    name, seed = opts["data"] or spec.get("data"), opts["seed"] if opts["seed"] is not None else spec.get("seed", 0)
    if name is None:
        raise o.UsageError("--data: the model file does not say which data set it was trained on; give --data")
    model, _ = models.load(opts["weights"], name="--weights")
    if masks is not None:
        o.masks_fit("--masks", masks, model, {"model": spec["name"], "width": spec["width"],
                                              "data": spec.get("data")})
        masks.apply(model)
    bundle = o.load_data(opts, name, seed)
    if tuple(bundle.input_shape) != tuple(spec["input_shape"]) or bundle.num_classes != spec["num_classes"]:
        raise o.UsageError(f"--data: {name} has inputs {tuple(bundle.input_shape)} and {bundle.num_classes} "
                           f"classes; the model takes {tuple(spec['input_shape'])} and {spec['num_classes']} classes")
    loss, accuracy = evaluate(model, bundle.test, batch_size=opts["batch_size"], device=opts["device"])
    print_row("panning evaluate", {
        "model": f"{spec['name']}" + ("" if spec["width"] == 1.0 else f" x{spec['width']:g}"),
        "data": f"{bundle.name} (seed {seed})",
        "masks": str(opts["masks"]) if masks is not None else "none",
        "sparsity": f"{masks.sparsity:.2%}" if masks is not None else "dense",
        "test samples": str(len(bundle.test)),
        "test loss": f"{loss:.4f}",
        "test acc": f"{100 * accuracy:.2f}%",
    })
    return 0
