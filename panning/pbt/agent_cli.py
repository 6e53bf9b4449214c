"""`panning agent`: train the panning agent (RL panning) for one network, with checkpoints, and save it.

    panning agent --action train --data mnist1d --model cnn1d --width 4 --out agents/cnn1d-w4 --threads 1

writes agents/cnn1d-w4.{safetensors,json} (the agent), .episodes.csv (one row per episode) and .curve.png
(the learning curve); the checkpoint folder (default: OUT.checkpoint) is resumed if it exists. Use the agent
with `panning prune --method rl_panning --agent agents/cnn1d-w4`. Options may also come from a YAML file
(--config). The command is registered in panning.cli; this module holds its option table and run function.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

from .. import checks, models
from .. import data as datasets
from ..commands import Option, boolean
from .agent import ALGORITHMS, TIMESTEPS, network_of, save_agent, train_agent
from .cli import MODEL_FOR
from .env import Curriculum
from .vec_env import PanningVecEnv

ACTIONS = ("train",)
DEFAULTS = dict(action="train", data="mnist1d", model=None, width=1.0, seed=0, algorithm="td3", timesteps=TIMESTEPS,
                lanes=1, iterations=100, per_class=10, checkpoint_every=5000, curriculum_switch=10_000,
                out=Path("agent"), progress=True)
OPTIONS = (
    Option("action", str, "what to do (default train)", ACTIONS),
    Option("data", str, f"data set (default {DEFAULTS['data']})", datasets.available()),
    Option("data-dir", Path, "folder of the CIFAR python pickles"),
    Option("model", str, "model (default: cnn1d for mnist1d, cnn2d for digits, ...)", models.available()),
    Option("width", float, "model width multiplier (default 1.0); the agent is bound to this network"),
    Option("seed", int, "seed of the network's initialization, the batches and the agent (default 0)"),
    Option("algorithm", str, "stable-baselines3 algorithm (default td3)", tuple(ALGORITHMS)),
    Option("timesteps", int, f"environment steps (Panning steps) to train for (default {TIMESTEPS})"),
    Option("lanes", int, "episodes stepped together in one vectorized environment (default 1, as the authors)"),
    Option("iterations", int, "Panning steps per episode (default 100)"),
    Option("per-class", int, "samples per class in each batch (default 10)"),
    Option("batches", int, "distinct batches, reused across episodes (default: iterations)"),
    Option("learning-starts", int, "random warm-up steps (default 2000)"),
    Option("batch-size", int, "agent's minibatch (default 256)"),
    Option("curriculum-switch", int, "steps of U(0.8, 1) before U(0.9, 1) | U(0.98, 1) targets (default 10000)"),
    Option("checkpoint", Path, "checkpoint folder, resumed if it exists (default: OUT.checkpoint)"),
    Option("checkpoint-every", int, "steps between checkpoints (default 5000)"),
    Option("out", Path, "the agent's path without suffix (default ./agent)"),
    Option("threads", int, "CPU threads for torch (default: torch's choice; 1 is best on a busy machine)"),
    Option("progress", boolean, "show a progress bar (default on)"),
)


def run(opts: dict) -> int:
    """Train an agent for the chosen network and save it with its episode log and learning curve."""
    opts = {option.dest: None for option in OPTIONS} | DEFAULTS | {k: v for k, v in opts.items() if v is not None}
    try:
        return _train(opts)
    except (ValueError, TypeError, OSError) as error:
        print(f"panning agent: error: {error}", file=sys.stderr)
        return 2


def _train(opts: dict) -> int:
    checks.choice("action", opts["action"], ACTIONS)
    if opts["threads"] is not None:
        torch.set_num_threads(checks.positive_int("threads", opts["threads"]))
    bundle = datasets.load(opts["data"], seed=opts["seed"], data_dir=opts["data_dir"])
    model_name = opts["model"] or MODEL_FOR[opts["data"]]
    torch.manual_seed(opts["seed"])
    model = models.build(model_name, bundle.input_shape, bundle.num_classes, width=opts["width"])
    curriculum = Curriculum(switch=checks.non_negative_int("curriculum_switch", opts["curriculum_switch"]))
    env = PanningVecEnv(model, bundle.train, bundle.input_shape, opts["lanes"], iterations=opts["iterations"],
                        per_class=opts["per_class"], batches=opts["batches"], seed=opts["seed"],
                        curriculum=curriculum)
    settings = {key: opts[key] for key in ("learning_starts", "batch_size") if opts[key] is not None}
    out = opts["out"]
    checkpoint = opts["checkpoint"] or out.with_name(out.name + ".checkpoint")
    episodes: list[dict] = []
    started = time.perf_counter()
    agent = train_agent(env, opts["timesteps"], algorithm=opts["algorithm"], seed=opts["seed"],
                        progress=opts["progress"] and sys.stderr.isatty(), checkpoint=checkpoint,
                        checkpoint_every=opts["checkpoint_every"], episodes=episodes,
                        network=network_of(env, model=model_name, width=opts["width"], data=bundle.name), **settings)
    seconds = time.perf_counter() - started
    save_agent(agent, out, episodes)
    rewards = [row["reward"] for row in episodes]
    first, last = (np.mean(rewards[:20]), np.mean(rewards[-20:])) if rewards else (float("nan"),) * 2
    print(f"{opts['algorithm']} agent for {model_name} x{opts['width']:g} / {bundle.name}: {agent.num_timesteps} "
          f"steps, {len(episodes)} episodes in {seconds:.1f} s this run; mean episode reward first 20 {first:.2f}, "
          f"last 20 {last:.2f}")
    print(f"agent saved to {out}.safetensors / .json; episodes in {out}.episodes.csv, curve in {out}.curve.png")
    return 0
