"""RL Panning against hand-scheduled Panning and the single criteria on the MNIST-1D protocol model.

For each cell (method, sparsity, seed) a freshly initialized cnn1d (torch.manual_seed(seed)) is pruned with
`panning.prune(..., seed=seed)` (RL Panning with the committed agent), its effective sparsity measured, then
trained with one short recipe and tested. Cells run seed by seed (all methods and sparsities of seed 0 first),
are cached in a JSON file written atomically after each cell, and an interrupted run resumes. The markdown table
gives mean ± std of test accuracy over the seeds that ran, the mean effective sparsity, the best single
criterion (SNIP, GraSP, SynFlow) per sparsity, and the agent's training cost from its JSON.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python experiments/agent_results.py     # resumable
    .venv/bin/python experiments/agent_results.py --report-only
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from panning import data as datasets
from panning import models
from panning.connectivity import collapse_report as report
from panning.io import write_text
from panning.pbt import hand_policy
from panning.pbt.agent import load_agent
from panning.pbt.env import PanningEnv
from panning.prune import prune
from panning.train import train

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
STEM = "agent-mnist1d"
AGENT = ROOT / "panning" / "pbt" / "agents" / "cnn1d-w4-mnist1d"
WIDTH = 4.0
#: The short training recipe of the pruning-before-training table (bench/results/pbt-mnist1d-digits.md).
RECIPE = dict(epochs=10, batch_size=100, lr=1e-2, optimizer="adam", weight_decay=0.0)
SPARSITIES = (0.95, 0.98, 0.99, 0.995)
SEEDS = (0, 1, 2)
METHODS = {"rl_panning": 100, "panning": 100, "synflow": 100, "snip": None, "grasp": None}
SINGLE = ("snip", "grasp", "synflow")


def run_cell(bundle, method: str, sparsity: float, seed: int, agent: Path) -> dict:
    torch.manual_seed(seed)
    model = models.build("cnn1d", bundle.input_shape, bundle.num_classes, width=WIDTH)
    options = {} if METHODS[method] is None else {"iterations": METHODS[method]}
    extra = {}
    if method == "rl_panning":
        options["agent"] = agent
        extra["agent_timesteps"] = json.loads(agent.with_suffix(".json").read_text()).get("timesteps")
    started = time.perf_counter()
    masks = prune(model, method, sparsity, bundle, seed=seed, **options)
    prune_seconds = time.perf_counter() - started
    measured = report(model, masks, bundle.input_shape)
    trained = train(model, bundle, masks=masks, seed=seed, progress=False, **RECIPE)
    return dict(method=method, sparsity=sparsity, seed=seed, test_acc=trained.test_acc,
                effective_sparsity=measured.effective_sparsity, prune_seconds=prune_seconds,
                train_seconds=trained.wall_time, **extra)


def episode_rewards(bundle, agent_path: Path, random_episodes: int = 3) -> dict:
    """Episode reward in the training environment (cnn1d seed 0) at each target: the agent's deterministic
    rollout, the hand schedule (index_weights as actions) and random actions (mean of `random_episodes`). Every
    episode starts from a freshly seeded environment, so all see the same ranges and batches."""
    torch.manual_seed(0)
    model = models.build("cnn1d", bundle.input_shape, bundle.num_classes, width=WIDTH)
    env = PanningEnv(model, bundle.train, bundle.input_shape)
    agent = load_agent(agent_path, env)
    rng = torch.Generator().manual_seed(0)

    def episode(target, policy):
        observation, _ = env.reset(seed=0, options={"sparsity": target})
        total, done = 0.0, False
        while not done:
            observation, reward, done, _, info = env.step(policy(observation))
            total += reward
        return total, info["effective_sparsity"]

    def hand(observation):
        e = env.step_index
        scheduled = 1.0 - int(env.core.counts[0, e]) / env.core.numel
        return [w - 1.0 for w in hand_policy(e, scheduled)]

    rows = {}
    for target in SPARSITIES:
        random_runs = [episode(target, lambda o: (torch.rand(3, generator=rng) * 2 - 1).numpy())
                       for _ in range(random_episodes)]
        rows[str(target)] = {"agent": episode(target, lambda o: agent.predict(o, deterministic=True)[0]),
                             "hand": episode(target, hand),
                             "random": (statistics.fmean(r for r, _ in random_runs),
                                        statistics.fmean(e for _, e in random_runs))}
    return rows


def write_cache(path: Path, cells: dict) -> None:
    write_text(path, json.dumps(cells, indent=1))


def table(cells: dict, agent: Path) -> str:
    def runs(method, sparsity):
        return [c for k, c in cells.items() if k != "rewards" and c["method"] == method and c["sparsity"] == sparsity]

    def cell(method, sparsity):
        found = runs(method, sparsity)
        if not found:
            return "—"
        accs = [100 * c["test_acc"] for c in found]
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        effective = statistics.fmean(c["effective_sparsity"] for c in found)
        return f"{statistics.fmean(accs):.1f} ± {std:.1f} (n={len(accs)}; eff {100 * effective:.2f}%)"

    def best_single(sparsity):
        means = {m: statistics.fmean(c["test_acc"] for c in runs(m, sparsity)) for m in SINGLE if runs(m, sparsity)}
        return max(means, key=means.get) if means else None

    spec = json.loads(agent.with_suffix(".json").read_text()) if agent.with_suffix(".json").exists() else {}
    lines = [
        f"# RL Panning vs hand-scheduled Panning vs the best single criterion (cnn1d x{WIDTH:g}, MNIST-1D)", "",
        f"Written by `experiments/agent_results.py` on {datetime.date.today()} ({platform.node()}, 1 thread). "
        f"Test accuracy (%) after {RECIPE['epochs']} epochs of Adam (lr {RECIPE['lr']}, batch "
        f"{RECIPE['batch_size']}, cosine), mean ± std over the seeds that ran (n), and the mean effective "
        "sparsity (pruned or disconnected weights). Panning and RL Panning take 100 steps.", "",
        f"Agent: `{agent.relative_to(ROOT)}` ({spec.get('algorithm', '?')}, {spec.get('timesteps', '?')} "
        f"transitions; its training cost is in docs/agent.md).", "",
        "| method | " + " | ".join(f"{100 * s:g}%" for s in SPARSITIES) + " |",
        "|---|" + "---|" * len(SPARSITIES),
    ]
    for method in ("rl_panning", "panning"):
        lines.append(f"| {method} | " + " | ".join(cell(method, s) for s in SPARSITIES) + " |")
    lines.append("| best single criterion | " + " | ".join(
        f"{best_single(s)}: {cell(best_single(s), s)}" if best_single(s) else "—" for s in SPARSITIES) + " |")
    for method in SINGLE:
        lines.append(f"| {method} | " + " | ".join(cell(method, s) for s in SPARSITIES) + " |")
    runs_only = {k: c for k, c in cells.items() if k != "rewards"}
    used = sorted({c.get("agent_timesteps") for c in runs_only.values() if c["method"] == "rl_panning"}, key=str)
    lines += ["", f"RL Panning cells used agents trained for {', '.join(map(str, used)) or '—'} transitions."]
    if "rewards" in cells:
        lines += ["", "Episode reward in the training environment (cnn1d seed 0, fresh environment per episode; "
                  "effective sparsity at the end in brackets; random: mean of 3 episodes):", "",
                  "| policy | " + " | ".join(f"{100 * s:g}%" for s in SPARSITIES) + " |",
                  "|---|" + "---|" * len(SPARSITIES)]
        for policy in ("agent", "hand", "random"):
            lines.append(f"| {policy} | " + " | ".join(
                "{:.2f} ({:.2f}%)".format(cells["rewards"][str(s)][policy][0], 100 * cells["rewards"][str(s)][policy][1])
                for s in SPARSITIES) + " |")
    seconds = {m: [c["prune_seconds"] for c in runs_only.values() if c["method"] == m] for m in METHODS}
    lines += ["", "Mean pruning time per network (s, 1 thread, shared machine): " + ", ".join(
        f"{m} {statistics.fmean(v):.1f}" for m, v in seconds.items() if v) + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", type=Path, default=AGENT)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--rewards", action="store_true", help="(re)measure the episode-reward table")
    args = parser.parse_args()
    torch.set_num_threads(1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    cache = RESULTS / f"{STEM}.json"
    cells = json.loads(cache.read_text()) if cache.exists() else {}
    if not args.report_only:
        bundle = datasets.load("mnist1d")
        if args.rewards:
            cells["rewards"] = episode_rewards(bundle, args.agent)
            write_cache(cache, cells)
        for seed in args.seeds:
            for sparsity in SPARSITIES:
                for method in args.methods:
                    key = f"{method}/{sparsity}/{seed}"
                    if key in cells:
                        continue
                    cells[key] = run_cell(bundle, method, sparsity, seed, args.agent)
                    write_cache(cache, cells)
                    print(key, f"{100 * cells[key]['test_acc']:.1f}%", flush=True)
    write_text(RESULTS / f"{STEM}.md", table(cells, args.agent))


if __name__ == "__main__":
    main()
