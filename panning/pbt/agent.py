"""The panning agent: TD3 (or DDPG / PPO) from stable-baselines3 on PanningEnv, saved without pickles.

Defaults follow the authors' released implementation (docs/agent.md): 5e4 steps, 2e3 random warm-up
steps, Gaussian exploration noise 0.1, batch 256, gamma 0.99, tau 0.01, target policy noise 0.2 (clip
0.5), policy delay 2, learning rate 2e-4, 256-256 actor and critic networks.

An agent is saved as safetensors (the policy's weights) plus a JSON file (algorithm and settings); loading
rebuilds the agent and loads the weights, so no code is ever unpickled.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from stable_baselines3 import DDPG, PPO, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.noise import NormalActionNoise

from ..io import save_tensors, write_text
from .env import PanningEnv

ALGORITHMS = {"td3": TD3, "ddpg": DDPG, "ppo": PPO}
TIMESTEPS = 50_000
EXPLORATION_NOISE = 0.1
#: Settings per algorithm (keyword arguments of the stable-baselines3 class, JSON-serializable).
SETTINGS: dict[str, dict[str, Any]] = {
    "td3": dict(learning_rate=2e-4, learning_starts=2000, batch_size=256, gamma=0.99, tau=0.01, policy_delay=2,
                target_policy_noise=0.2, target_noise_clip=0.5, buffer_size=TIMESTEPS),
    "ddpg": dict(learning_rate=2e-4, learning_starts=2000, batch_size=256, gamma=0.99, tau=0.01,
                 buffer_size=TIMESTEPS),
    "ppo": dict(learning_rate=2e-4, batch_size=256, gamma=0.99, n_steps=2048),
}
NET_ARCH = [256, 256]


def make_agent(env: PanningEnv, algorithm: str = "td3", *, seed: int = 0, **settings) -> BaseAlgorithm:
    """A fresh agent for `env`; `settings` override SETTINGS[algorithm] (e.g. learning_starts=100)."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm: expected one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    if not isinstance(env, PanningEnv):
        raise TypeError(f"env: expected a PanningEnv, got {type(env).__name__}")
    unknown = sorted(set(settings) - set(SETTINGS[algorithm]))
    if unknown:
        raise TypeError(f"settings: {algorithm} does not accept {unknown} (accepts {sorted(SETTINGS[algorithm])})")
    values = {**SETTINGS[algorithm], **settings}
    extra = {}
    if algorithm != "ppo":
        extra["action_noise"] = NormalActionNoise(np.zeros(3), np.full(3, EXPLORATION_NOISE))
    agent = ALGORITHMS[algorithm]("MlpPolicy", env, policy_kwargs=dict(net_arch=list(NET_ARCH)), seed=seed,
                                  device="cpu", verbose=0, **values, **extra)
    agent.panning_settings = {"algorithm": algorithm, "seed": seed, "settings": values}
    return agent


def train_agent(env: PanningEnv, timesteps: int = TIMESTEPS, *, algorithm: str = "td3", seed: int = 0,
                progress: bool = False, **settings) -> BaseAlgorithm:
    """Make an agent and train it for `timesteps` environment steps (each a Panning step)."""
    if isinstance(timesteps, bool) or not isinstance(timesteps, int) or timesteps < 1:
        raise ValueError(f"timesteps: expected a positive int, got {timesteps!r}")
    agent = make_agent(env, algorithm, seed=seed, **settings)
    agent.learn(total_timesteps=timesteps, progress_bar=progress)
    return agent


def rollout(agent: BaseAlgorithm, env: PanningEnv, sparsity: float) -> torch.Tensor:
    """One deterministic episode at `sparsity`; returns the final flat mask (exactly the target's count).

    If the network dies on the way the episode ends early; the pruning then finishes with the agent's last
    index weights so the mask still has the requested sparsity.
    """
    observation, _ = env.reset(options={"sparsity": sparsity})
    terminated = False
    while not terminated:
        action, _ = agent.predict(observation, deterministic=True)
        observation, _, terminated, _, _ = env.step(action)
    while env.step_index < env.iterations:  # died early: finish the schedule with the last weights
        env.step(action)
    return env.mask.clone()


def save_agent(agent: BaseAlgorithm, path: str | os.PathLike) -> None:
    """Write `path`.safetensors (policy weights) and `path`.json (algorithm, seed, settings), atomically."""
    settings = getattr(agent, "panning_settings", None)
    if settings is None:
        raise ValueError("agent: not made by panning.pbt.agent.make_agent")
    base = Path(os.fspath(path))
    weights = {name: t.detach().cpu().contiguous() for name, t in agent.policy.state_dict().items()}
    save_tensors(weights, base.with_suffix(".safetensors"))
    write_text(base.with_suffix(".json"), json.dumps(settings, indent=1))


def load_agent(path: str | os.PathLike, env: PanningEnv) -> BaseAlgorithm:
    """Rebuild an agent saved by save_agent for `env` (same observation and action spaces)."""
    base = Path(os.fspath(path))
    settings = json.loads(base.with_suffix(".json").read_text())
    agent = make_agent(env, settings["algorithm"], seed=settings["seed"], **settings["settings"])
    agent.policy.load_state_dict(load_file(str(base.with_suffix(".safetensors"))))
    agent.policy.set_training_mode(False)
    return agent
