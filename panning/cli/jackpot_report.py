"""What `panning jackpot` reports: the printed table and the plot of a finished search (summary.json's numbers)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

from ..io import save_figure


def table(opts: dict, summary: dict, result, model) -> str:
    """The printed report: dense, magnitude, jackpot (and fine-tuned) accuracy, mask changes, per-layer density."""
    settings = result.settings
    rows = [f"jackpot: {opts['data']} {opts['model']}, sparsity {opts['sparsity']:.1%} ({opts['preset']} preset: "
            f"{opts['budget']} budget, {settings['init']} start, {settings['restriction']} restriction, "
            f"lr {settings['lr']:g}), {result.steps} steps in {len(result.history)} epochs",
            f"  dense accuracy             {summary['dense_acc']:.2%}",
            f"  magnitude-pruned accuracy  {summary['magnitude_acc']:.2%}",
            f"  magnitude + BN statistics  {summary['magnitude_bn_acc']:.2%}",
            f"  jackpot accuracy           {summary['jackpot_acc']:.2%}   (mask IoU with magnitude "
            f"{summary['overlap_with_magnitude']:.3f})"]
    if "finetuned_acc" in summary:
        rows.append(f"  fine-tuned accuracy        {summary['finetuned_acc']:.2%}")
    c = summary["counters"]
    rises = (f"loss rose after {c['rises']} of {c['updates']} mask updates" if opts["monitor"]
             else "losses not monitored (--monitor counts them)")
    rows.append(f"  mask changes: {c['proposed']} pairs proposed, {c['admitted']} admitted; {rises}")
    rows.append(f"  {'layer':<28} {'weights':>9} {'kept':>9} {'density':>8}")
    searched = result.masks
    for name, p in model.named_parameters():
        if name.endswith("scores"):
            continue
        if name in searched:
            kept = int(searched[name].sum())
            rows.append(f"  {name:<28} {p.numel():>9} {kept:>9} {kept / p.numel():>8.3f}")
        elif p.dim() > 1:
            rows.append(f"  {name:<28} {p.numel():>9} {p.numel():>9} {1:>8.3f}  (dense)")
    rows.append(f"  {'searched total':<28} {searched.numel:>9} {searched.kept:>9} {1 - searched.sparsity:>8.3f}")
    return "\n".join(rows)


def plot(path: Path, opts: dict, summary: dict, result) -> None:
    """Test accuracy over the search epochs against the dense and magnitude baselines, and per-layer density."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc, density) = plt.subplots(1, 2, figsize=(10, 3.8))
    epochs = [0] + [r.epoch for r in result.history]
    acc.plot(epochs, [100 * result.initial_test_acc] + [100 * r.test_acc for r in result.history], "o-",
             label="jackpot search")
    acc.axhline(100 * summary["dense_acc"], color="k", ls="--", label="dense")
    acc.axhline(100 * summary["magnitude_acc"], color="gray", ls=":", label="magnitude pruning")
    acc.set(xlabel="search epoch", ylabel="test accuracy (%)",
            title=f"{opts['data']} {opts['model']}, {opts['sparsity']:.0%} sparse")
    acc.legend()
    names = list(result.masks)
    density.bar(range(len(names)), [float(result.masks[n].float().mean()) for n in names])
    density.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
    density.set(ylabel="kept fraction", title="per-layer density")
    save_figure(fig, path, dpi=120)
