"""The panning agent's results on the MNIST-1D protocol model (cnn1d width 4): RL Panning against
hand-scheduled Panning and the best single criterion, and the agent's episode reward.

Accuracy comes from the pruning-before-training runs (experiments/pbt_results.py: its `rl_panning` row runs
the shipped agent on mnist1d under the same protocol as every other row, 3 seeds), so there is one training
recipe and one record. This script adds what only the agent has: the episode reward of the agent's
deterministic rollout, the hand schedule and random actions in the training environment, at each target, and
the agent's training cost. The reward table is cached in experiments/results/agent-mnist1d.json with the agent's digest
and remeasured when the agent changes.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python experiments/pbt_results.py     # the accuracy rows first
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python experiments/agent_results.py
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
from pathlib import Path

import torch

from panning import data as datasets, models
from panning.io import write_text
from panning.pbt import hand_policy
from panning.pbt.rl.agent import agent_digest, load_agent, read_agent_file
from panning.pbt.rl.env import PanningEnv
from pbt_results import SINGLE, SPARSITIES, STEM as PBT_STEM, summarize  # this folder is on sys.path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "experiments" / "results"
STEM = "agent-mnist1d"
PBT = RESULTS / f"{PBT_STEM}.json"
AGENT = ROOT / "panning" / "pbt" / "rl" / "agents" / "cnn1d-w4-mnist1d"
RANDOM_EPISODES = 3


def episode_rewards(agent_path: Path) -> dict:
    """Episode reward in the training environment (the protocol's cnn1d, seed 0) at each target: the agent's
    deterministic rollout, the hand schedule (its index weights as actions) and random actions (mean of
    RANDOM_EPISODES). Every episode starts from a freshly seeded environment: all see the same ranges and batches."""
    bundle = datasets.load("mnist1d")
    torch.manual_seed(0)
    model = models.build("cnn1d", bundle.input_shape, bundle.num_classes, width=4.0)
    env = PanningEnv(model, bundle.train, bundle.input_shape)
    agent = load_agent(agent_path, env)
    rng = torch.Generator().manual_seed(0)

    def episode(target, policy):
        observation, _ = env.reset(seed=0, options={"sparsity": target})
        total, done = 0.0, False
        while not done:
            observation, reward, done, _, info = env.step(policy(observation))
            total += reward
        return total, info["flow_sparsity"]

    def hand(observation):
        e = env.step_index
        return [w - 1.0 for w in hand_policy(e, float(env.core.scheduled[0, e]))]

    rows = {}
    for target in SPARSITIES:
        randoms = [episode(target, lambda o: (torch.rand(3, generator=rng) * 2 - 1).numpy())
                   for _ in range(RANDOM_EPISODES)]
        rows[str(target)] = {"agent": episode(target, lambda o: agent.predict(o, deterministic=True)[0]),
                             "hand": episode(target, hand),
                             "random": (statistics.fmean(r for r, _ in randoms),
                                        statistics.fmean(e for _, e in randoms))}
    return rows


def markdown(runs: list[dict], rewards: dict, agent: Path) -> str:
    spec = read_agent_file(agent)

    def cell(stats):
        if stats is None:
            return "—"
        return f"{stats['mean']:.1f} ± {stats['std']:.1f} (n={stats['n']}; eff {stats['effective']:.2f}%)"

    def best_single(s):
        found = {m: st for m in SINGLE if (st := summarize(runs, "mnist1d", m, s))}
        return max(found.items(), key=lambda item: item[1]["mean"]) if found else (None, None)

    header = ["| row | " + " | ".join(f"{100 * s:g}%" for s in SPARSITIES) + " |", "|---|" + "---|" * len(SPARSITIES)]
    lines = ["# RL Panning vs hand-scheduled Panning vs the best single criterion (cnn1d width 4, MNIST-1D)", "",
             f"Written by `experiments/agent_results.py` on {datetime.date.today()} ({platform.machine()}, 1 thread).",
             "", f"Agent: `{agent.relative_to(ROOT)}` ({spec['algorithm']}, seed {spec['seed']}, {spec['timesteps']} "
             "transitions; its training cost is in docs/agent.md).", "",
             "Test accuracy (%) after training, from the pruning-before-training runs "
             "(experiments/results/pbt-mnist1d-digits.md: same protocol, recipe and seeds for every row), "
             "mean ± std over the seeds (n), and the mean effective sparsity:", "", *header]
    for label in ("rl_panning", "panning"):
        cells = (cell(summarize(runs, "mnist1d", label, s)) for s in SPARSITIES)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("| best single criterion | " + " | ".join(
        f"{name}: {cell(stats)}" if name else "—" for name, stats in map(best_single, SPARSITIES)) + " |")
    lines += ["", f"Episode reward in the training environment (the protocol's cnn1d, seed 0; a fresh environment "
              "per episode; in brackets the flow sparsity at the end, the environment's measure (docs/agent.md); "
              f"random: mean of {RANDOM_EPISODES} episodes):",
              "", *header]
    for policy in ("agent", "hand", "random"):
        lines.append(f"| {policy} | " + " | ".join(
            f"{rewards[str(s)][policy][0]:.2f} ({100 * rewards[str(s)][policy][1]:.2f}%)"
            for s in SPARSITIES) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", type=Path, default=AGENT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cache = RESULTS / f"{STEM}.json"
    cached = json.loads(cache.read_text()) if cache.exists() else {}
    agent_sha256 = agent_digest(args.agent)
    if cached.get("agent_sha256") != agent_sha256:
        cached = {"agent_sha256": agent_sha256, "rewards": episode_rewards(args.agent)}
        write_text(cache, json.dumps(cached, indent=1))
    runs = json.loads(PBT.read_text())["runs"]
    write_text(RESULTS / f"{STEM}.md", markdown(runs, cached["rewards"], args.agent))


if __name__ == "__main__":
    main()
