"""`panning agent`: train the panning agent (RL panning) for one network, with checkpoints, and save it.

    panning agent --data mnist1d --model cnn1d --width 4 --out agents/cnn1d-w4 --threads 1

writes agents/cnn1d-w4.{safetensors,json} (the agent), .episodes.csv (one row per episode) and .curve.png (the
learning curve); the checkpoint folder (default: OUT.checkpoint) is resumed if it exists. Use the agent with
`panning prune --method rl_panning --agent agents/cnn1d-w4`. See docs/agent.md.
"""
from __future__ import annotations

from pathlib import Path

from .. import checks
from ..config import CHECKPOINT_EVERY
from . import options as o
from .options import Option

HELP = "train the panning agent (RL panning) for a network, with checkpoints, and save it"
# --algorithm, --timesteps, --checkpoint-every, --seed and which settings --algorithm accepts are checked as `run`
# builds its panning.pbt.rl.agent.AgentConfig, before any work; --width by panning.models.build; --lanes,
# --iterations, --per-class (also against the smallest class) and --batches by the environment when it is made,
# before its work. Each refusal names its field, which panning.cli names as the flag.
OPTIONS = (
    Option("action", str, "what to do", "train", ("train",)),
    o.DATA, o.DATA_DIR, o.MODEL, o.WIDTH,
    o.SEED.but(help="seed of the network's initialization, the batches and the agent"),
    Option("algorithm", str, "stable-baselines3 algorithm", "td3"),
    Option("timesteps", int, "environment steps (Panning steps) to train for; default: panning.pbt.rl.agent.TIMESTEPS"),
    Option("lanes", int, "episodes stepped together in one vectorized environment (1: as the authors)", 1),
    Option("iterations", int, "Panning steps per episode", 100),
    Option("per-class", int, "samples per class in each batch", 10),
    Option("batches", int, "distinct batches, reused across episodes; default: iterations"),
    Option("learning-starts", int, "random warm-up steps; default: the agent's (2000)"),
    Option("batch-size", int, "the agent's minibatch; default: the agent's (256)", check=checks.positive_int),
    Option("curriculum-switch", int, "steps of U(0.8, 1) targets before U(0.9, 1) | U(0.98, 1)", 10_000),
    Option("checkpoint", Path, "checkpoint folder, resumed if it exists; default: OUT.checkpoint",
           check=o.output_folder),
    Option("checkpoint-every", int, CHECKPOINT_EVERY.help, 5000),
    Option("out", Path, "the agent's path without suffix (its folder is created)", Path("agent"),
           check=o.output_folder),
    o.PROGRESS, o.THREADS,
)


def checkpoint_folder(opts: dict) -> Path:
    """--checkpoint, else OUT.checkpoint beside the agent."""
    out = opts.get("out") or Path("agent")
    return opts.get("checkpoint") or out.with_name(out.name + ".checkpoint")


def resume_hint(opts: dict) -> str:
    return f"run the same command again to resume from the checkpoint in {checkpoint_folder(opts)}"


def run(opts: dict) -> int:
    """Train an agent for the chosen network and save it with its episode log and learning curve."""
    import time

    import numpy as np

    from ..io import WriteError
    from ..pbt.rl.agent import AgentConfig, network_of, save_agent, train_agent
    from ..pbt.rl.env import Curriculum
    from ..pbt.rl.vec_env import PanningVecEnv

    given = lambda *keys: {key: opts[key] for key in keys if opts[key] is not None}  # noqa: E731
    config = AgentConfig(**given("algorithm", "timesteps", "checkpoint_every", "seed"),
                         settings=given("learning_starts", "batch_size"))
    curriculum = Curriculum(switch=opts["curriculum_switch"])
    bundle = o.load_data(opts)
    model_name = o.model_for(opts)
    model = o.build_model(opts, bundle)
    env = PanningVecEnv(model, bundle.train, bundle.input_shape, opts["lanes"], iterations=opts["iterations"],
                        per_class=opts["per_class"], batches=opts["batches"], seed=opts["seed"], curriculum=curriculum)
    out = opts["out"]
    episodes: list[dict] = []
    started = time.perf_counter()
    # a checkpoint of other settings, or in use, is a ConfigError of `checkpoint`: the handler names --checkpoint
    agent = train_agent(env, config.timesteps, algorithm=config.algorithm, seed=config.seed, progress=opts["progress"],
                        checkpoint=checkpoint_folder(opts), checkpoint_every=config.checkpoint_every,
                        episodes=episodes, network=network_of(env, model=model_name, width=opts["width"],
                                                              data=bundle.name), **config.settings)
    seconds = time.perf_counter() - started
    try:
        save_agent(agent, out, episodes)
    except WriteError as error:
        raise WriteError(f"{error}; the trained agent is in the checkpoint {str(checkpoint_folder(opts))!r}: run "
                         "the same command again, with space, to write it") from None
    rewards = [row["reward"] for row in episodes]
    first, last = (np.mean(rewards[:20]), np.mean(rewards[-20:])) if rewards else (float("nan"),) * 2
    print(f"{opts['algorithm']} agent for {model_name} x{opts['width']:g} / {bundle.name}: {agent.num_timesteps} "
          f"steps, {len(episodes)} episodes in {seconds:.1f} s this run; mean episode reward first 20 {first:.2f}, "
          f"last 20 {last:.2f}")
    print(f"agent saved to {out}.safetensors / .json; episodes in {out}.episodes.csv, curve in {out}.curve.png")
    return 0
