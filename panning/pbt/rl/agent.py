"""The panning agent: TD3 (or DDPG / PPO) from stable-baselines3 on the panning environment, trained with
checkpoints, resumed bit for bit, saved and loaded without pickles (docs/agent.md).

Defaults follow the authors' released implementation (kangxiatao/RLPanning): 5e4 steps, 2e3 random warm-up
steps, Gaussian exploration noise 0.1, batch 256, gamma 0.99, tau 0.01, target policy noise 0.2 (clip 0.5),
policy delay 2, learning rate 2e-4, 256-256 actor and critic networks, one gradient step per transition, and
the target-sparsity curriculum of panning.pbt.rl.env.Curriculum.

An agent is `PATH.safetensors` (the actor's weights) + `PATH.json` (algorithm, settings and the network it was
trained for); training also writes `PATH.episodes.csv` and `PATH.curve.png`. A checkpoint is a folder of
safetensors, numpy .npz (allow_pickle=False) and JSON (panning.pbt.rl.checkpoint).
"""
from __future__ import annotations

import contextlib
import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from stable_baselines3 import DDPG, PPO, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.noise import NormalActionNoise
from torch import nn
from tqdm import tqdm

from ... import checks
from ...config import CHECKPOINT_EVERY, SEED, Config, ConfigError, one_of, setting
from ...io import atomic_path, file_digest, folder_lock, save_figure, save_tensors, write_text
from . import checkpoint as checkpoints
from .env import PanningEnv
from .vec_env import PanningVecEnv

ALGORITHMS = {"td3": TD3, "ddpg": DDPG, "ppo": PPO}
TIMESTEPS = 50_000
EXPLORATION_NOISE = 0.1
#: Settings per algorithm (keyword arguments of the stable-baselines3 class, JSON-serializable).
SETTINGS: dict[str, dict[str, Any]] = {
    "td3": dict(learning_rate=2e-4, learning_starts=2000, batch_size=256, gamma=0.99, tau=0.01, policy_delay=2,
                target_policy_noise=0.2, target_noise_clip=0.5, buffer_size=TIMESTEPS, train_freq=1,
                gradient_steps=-1),
    "ddpg": dict(learning_rate=2e-4, learning_starts=2000, batch_size=256, gamma=0.99, tau=0.01,
                 buffer_size=TIMESTEPS, train_freq=1, gradient_steps=-1),
    "ppo": dict(learning_rate=2e-4, batch_size=256, gamma=0.99, n_steps=2048),
}
NET_ARCH = [256, 256]
#: The format marker of a saved agent (the key "format" of its JSON and of its weights' metadata); agents saved
#: before it was added have none and are read as this format if they name their network.
FORMAT = "panning.agent/1"
#: Agents shipped with the package (package data): AGENTS / "cnn1d-w4-mnist1d" is cnn1d width 4 on MNIST-1D.
AGENTS = Path(__file__).with_name("agents")
AgentEnv = PanningEnv | PanningVecEnv


def network_of(env: AgentEnv, **named) -> dict[str, Any]:
    """What an agent is bound to: the arena's layout (parameter name -> size), plus any names given (model,
    width, data). An agent refuses an environment whose network differs."""
    arena = env.core.arena if isinstance(env, PanningVecEnv) else env.arena
    layout = {name: int(size) for name, size in zip(arena.names, arena.sizes.tolist())}
    return {**{k: v for k, v in named.items() if v is not None}, "arena": layout}


@dataclass(frozen=True)
class AgentConfig(Config):
    """How an agent is made and trained, every setting checked once when built (panning.config): the algorithm,
    `settings` that override SETTINGS[algorithm] (e.g. learning_starts=100), the seed, the environment steps to
    train for and the steps between checkpoints. make_agent and train_agent build it from their keywords; the
    command line builds it from its options before any work."""

    algorithm: str = setting("td3", check=one_of(ALGORITHMS))
    timesteps: int = setting(TIMESTEPS, check=checks.positive_int)
    checkpoint_every: int = CHECKPOINT_EVERY.field(5000)
    seed: int = SEED.field(0)
    settings: dict[str, Any] = field(default_factory=dict)

    def relate(self) -> None:
        unknown = sorted(set(self.settings) - set(SETTINGS[self.algorithm]))
        if unknown:
            raise ConfigError("settings", f"{self.algorithm} does not accept {unknown} "
                                          f"(accepts {sorted(SETTINGS[self.algorithm])})")

    @property
    def agent_settings(self) -> dict[str, Any]:
        """SETTINGS[algorithm] with the overrides: every keyword the stable-baselines3 class gets from them."""
        return {**SETTINGS[self.algorithm], **self.settings}


def make_agent(env: AgentEnv, algorithm: str = "td3", *, seed: int = 0, network: dict | None = None,
               **settings) -> BaseAlgorithm:
    """A fresh agent for `env` (a PanningEnv or PanningVecEnv); `settings` override SETTINGS[algorithm]
    (e.g. learning_starts=100)."""
    return _make(env, AgentConfig(algorithm=algorithm, seed=seed, settings=settings), network)


def _make(env: AgentEnv, config: AgentConfig, network: dict | None) -> BaseAlgorithm:
    values = config.agent_settings
    extra = {}
    if config.algorithm != "ppo":
        extra["action_noise"] = NormalActionNoise(np.zeros(3), np.full(3, EXPLORATION_NOISE))
    agent = ALGORITHMS[config.algorithm]("MlpPolicy", env, policy_kwargs=dict(net_arch=list(NET_ARCH)),
                                         seed=config.seed, device="cpu", verbose=0, **values, **extra)
    agent.panning_settings = {"algorithm": config.algorithm, "seed": config.seed, "settings": values,
                              "network": network if network is not None else network_of(env)}
    return agent


class _Progress(BaseCallback):
    """Counts transitions on a tqdm bar showing the running episode reward, and logs every finished episode."""

    def __init__(self, episodes: list[dict], bar: tqdm | None):
        super().__init__()
        self.episodes, self.bar = episodes, bar

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            if "episode" in info:
                e = info["episode"]
                self.episodes.append({"timestep": self.num_timesteps, "reward": e["r"], "length": e["l"],
                                      "target": e["target"]})
        if self.bar is not None:
            self.bar.update(self.training_env.num_envs)
            if self.episodes:
                recent = [row["reward"] for row in self.episodes[-20:]]
                self.bar.set_postfix(episodes=len(self.episodes), reward=f"{np.mean(recent):.2f}", refresh=False)
        return True


def train_agent(env: AgentEnv, timesteps: int = TIMESTEPS, *, algorithm: str = "td3", seed: int = 0,
                progress: bool = False, checkpoint: str | os.PathLike | None = None,
                checkpoint_every: int = 5000, network: dict | None = None, episodes: list | None = None,
                **settings) -> BaseAlgorithm:
    """Make an agent and train it on `env` (a PanningVecEnv; lanes=1 is the authors' single environment) for
    `timesteps` environment steps (each a Panning step); the settings are checked as an AgentConfig.

    With `checkpoint` (a folder), the run is saved every `checkpoint_every` steps and at the end, and an
    existing checkpoint there is resumed: the result is the same agent, bit for bit on CPU, as an uninterrupted
    run. Learning always proceeds in chunks of `checkpoint_every` steps (rounded to whole vectorized steps),
    checkpointed or not, so both runs take the same path. `episodes`, if given, receives one dict per finished
    episode (timestep, reward, length, target).
    """
    config = AgentConfig(algorithm=algorithm, timesteps=timesteps, checkpoint_every=checkpoint_every, seed=seed,
                         settings=settings)
    episodes = [] if episodes is None else episodes
    folder = Path(os.fspath(checkpoint)) if checkpoint is not None else None
    network = network if network is not None else network_of(env)
    with folder_lock(folder, "checkpoint") if folder is not None else contextlib.nullcontext():
        if folder is not None and checkpoints.exists(folder):
            wanted = {"algorithm": algorithm, "seed": seed, "settings": config.agent_settings,
                      "env": env.core.settings()}
            agent = resume(folder, env, network, episodes, wanted)
        else:
            agent = _make(env, config, network)
        agent.panning_settings["env"] = env.core.settings()
        chunk = max(1, checkpoint_every // env.num_envs) * env.num_envs
        bar = tqdm(total=timesteps, initial=min(agent.num_timesteps, timesteps), unit="step", dynamic_ncols=True,
                   desc="panning agent", disable=None) if progress else None
        callback = _Progress(episodes, bar)
        try:
            while agent.num_timesteps < timesteps:
                agent.learn(total_timesteps=min(chunk, timesteps - agent.num_timesteps), reset_num_timesteps=False,
                            callback=callback)
                if folder is not None:
                    save_checkpoint(folder, agent, env, episodes)
        finally:
            if bar is not None:
                bar.close()
    return agent


def save_checkpoint(folder: Path, agent: BaseAlgorithm, env: PanningVecEnv, episodes: list[dict]) -> Path:
    """Snapshot the training (agent, environment, episode log) into `folder` (panning.pbt.rl.checkpoint)."""
    values, tensors, arrays = checkpoints.capture(agent)
    env_values, env_tensors = env.state()
    values.update(agent=agent.panning_settings, env=env_values, episodes=episodes)
    return checkpoints.save(folder, values, {**tensors, **env_tensors}, arrays)


def resume(folder: Path, env: PanningVecEnv, network: dict, episodes: list[dict], wanted: dict) -> BaseAlgorithm:
    """The agent of the checkpoint in `folder`, with `env` and `episodes` put back where it stopped. The run must
    continue with the same algorithm, seed and settings (`wanted`) on the same network."""
    values, tensors, arrays = checkpoints.load(folder)
    spec = values["agent"]
    check_network(spec["network"], network, folder)
    # Compared setting by setting (the agent's and the environment's settings one level down), as JSON stores
    # them; a checkpoint written before the environment's settings were recorded has none to compare.
    flat = lambda run: {**{k: v for k, v in run.items() if k not in ("settings", "env")},  # noqa: E731
                        **run["settings"], **run.get("env", {})}
    saved = flat({key: spec[key] for key in wanted if key in spec})
    now = flat(json.loads(json.dumps({key: value for key, value in wanted.items() if key in spec})))
    differing = sorted(key for key in saved.keys() | now.keys() if saved.get(key) != now.get(key))
    if differing:
        both = "; ".join(f"{key} {saved.get(key)!r} there, {now.get(key)!r} here" for key in differing)
        raise ConfigError("checkpoint", f"{str(folder)!r}: made with other settings ({both}); continue with the "
                         "checkpoint's, or start afresh with another checkpoint folder (or delete this one)")
    agent = make_agent(env, spec["algorithm"], seed=spec["seed"], network=spec["network"], **spec["settings"])
    checkpoints.restore(agent, values, tensors, arrays)
    env.load_state(values["env"], tensors)
    env._reset_seeds()  # the constructor's seed is for a fresh start; this run continues
    episodes[:] = values["episodes"]
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


def agent_file(path: str | os.PathLike, suffix: str) -> Path:
    """The file `suffix` (".json", ".safetensors", ".episodes.csv", ".curve.png") of the agent at `path`, its path
    without suffix (a trailing .json or .safetensors is dropped). The suffix is appended, not swapped in, so a name
    such as cnn1d-w0.5 keeps its ".5" (swapped, widths 0.5 and 0.2 both wrote cnn1d-w0.json)."""
    base = Path(os.fspath(path))
    if base.suffix in (".json", ".safetensors"):
        base = base.with_suffix("")
    return base.with_name(base.name + suffix)


def agent_digest(path: str | os.PathLike) -> str:
    """The SHA-256 of the agent's weights file: what a result cached for the agent at `path` depends on."""
    return file_digest(agent_file(path, ".safetensors"))


def save_agent(agent: BaseAlgorithm, path: str | os.PathLike, episodes: list[dict] | None = None) -> None:
    """Write `path`.safetensors (the policy's weights) and `path`.json (algorithm, seed, settings, network), each
    atomically; with `episodes`, also `path`.episodes.csv and the learning curve `path`.curve.png.

    TD3 and DDPG keep only the actor (what acting needs; critics, targets and optimizers live in checkpoints),
    so a saved agent is a few hundred KB. `agent` is one make_agent made (it carries `panning_settings`)."""
    text = json.dumps({"format": FORMAT, **agent.panning_settings, "timesteps": int(agent.num_timesteps)}, indent=1)
    weights = {name: t.detach().cpu().contiguous() for name, t in _acting(agent).state_dict().items()}
    save_tensors(weights, agent_file(path, ".safetensors"), metadata={"format": FORMAT})
    write_text(agent_file(path, ".json"), text)
    if episodes is not None:
        write_episodes(agent_file(path, ".episodes.csv"), episodes)
        plot_curve(agent_file(path, ".curve.png"), episodes)


def _acting(agent: BaseAlgorithm) -> nn.Module:
    """What acting needs, whose state dict is a saved agent's weights: PPO's whole policy, else the actor (its
    names keep the policy's "actor." prefix)."""
    return agent.policy if isinstance(agent, PPO) else nn.ModuleDict({"actor": agent.actor})


def read_agent_file(path: str | os.PathLike) -> dict:
    """The JSON half of a saved agent, checked: one error naming the path and the cause if it is not a panning
    agent of this format (unreadable, not JSON, another format, no algorithm, no network)."""
    file = agent_file(path, ".json")
    cause = None
    try:
        spec = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        cause = str(error)
    else:
        if isinstance(spec, dict) and spec.get("format", FORMAT) != FORMAT:
            cause = f"it is a {spec['format']!r} file, not {FORMAT}"
        elif not isinstance(spec, dict) or spec.get("algorithm") not in ALGORITHMS or "settings" not in spec:
            cause = "no algorithm and settings"
        elif not isinstance(spec.get("network"), dict) or not isinstance(spec["network"].get("arena"), dict):
            cause = "an earlier format that does not say which network it was trained for; train it again"
    if cause is not None:
        raise ValueError(f"agent {str(file)!r}: not a saved panning agent ({cause})")
    return spec


def check_agent_files(path: str | os.PathLike) -> dict:
    """Both files of the agent at `path`, checked without building it: the JSON half (read_agent_file) and a
    readable safetensors file of weights; the JSON half is returned. A check before any work."""
    spec = read_agent_file(path)
    _weights(path)
    return spec


def _weights(path: str | os.PathLike, into: nn.Module | None = None) -> None:
    """Read the weights file of the agent at `path`: its header alone, or with `into` every tensor, loaded into
    `into` strictly (the same names and shapes); an error naming the file if it is unreadable or does not fit."""
    file = agent_file(path, ".safetensors")
    try:
        if into is None:
            with safe_open(str(file), framework="pt") as weights:
                weights.keys()
        else:
            into.load_state_dict(load_file(str(file)))
    except (OSError, SafetensorError, RuntimeError) as error:  # RuntimeError: load_state_dict's names or shapes
        raise ValueError(f"agent {str(file)!r}: not a readable safetensors file of agent weights that fit its "
                         f"policy ({' '.join(str(error).split())})") from None


def load_agent(path: str | os.PathLike, env: AgentEnv, network: dict | None = None) -> BaseAlgorithm:
    """Rebuild an agent saved by save_agent for `env`. It must have been trained for the same network: the
    arena layout always, and the model, width and data set named in `network` when given."""
    spec = read_agent_file(path)
    check_network(spec.get("network", {}), network_of(env, **(network or {})), agent_file(path, ".json"))
    agent = make_agent(env, spec["algorithm"], seed=spec["seed"], network=spec.get("network"), **spec["settings"])
    _weights(path, into=_acting(agent))
    if hasattr(agent, "actor_target"):
        agent.actor_target.load_state_dict(agent.actor.state_dict())
    agent.policy.set_training_mode(False)
    return agent


def network_differences(saved: dict, wanted: dict) -> list[str]:
    """How the network an agent was trained for (`saved`, its file's "network") differs from `wanted`, one phrase
    per difference; only the keys both name are compared (an agent trained from Python has no model name)."""
    differences = [f"{key} {saved[key]!r} (here {wanted[key]!r})" for key in wanted
                   if key in saved and saved[key] != wanted[key] and key != "arena"]
    if saved.get("arena") is not None and wanted.get("arena") is not None and saved["arena"] != wanted["arena"]:
        differences.append(f"arena of {sum(saved['arena'].values())} weights in {len(saved['arena'])} layers "
                           f"(here {sum(wanted['arena'].values())} in {len(wanted['arena'])})")
    return differences


def agent_differences(path: str | os.PathLike, **network) -> list[str]:
    """How the network the agent saved at `path` was trained for differs from `network` (model=, width=, data=),
    read from its JSON file alone: a check before any work (load_agent also compares the arena)."""
    return network_differences(read_agent_file(path).get("network", {}), network)


def check_network(saved: dict, wanted: dict, path: Path) -> None:
    """Refuse an agent trained for another network, naming what differs."""
    differences = network_differences(saved, wanted)
    if differences:
        raise ValueError(f"agent {str(path)!r}: trained for another network: " + "; ".join(differences))


def write_episodes(path: Path, episodes: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["timestep", "reward", "length", "target"])
        writer.writeheader()
        writer.writerows(episodes)


def plot_curve(path: Path, episodes: list[dict]) -> None:
    """Episode reward against transitions, with a moving average over 20 episodes."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    if episodes:
        x = np.array([row["timestep"] for row in episodes])
        y = np.array([row["reward"] for row in episodes])
        ax.plot(x, y, ".", alpha=0.3, label="episode")
        window = min(20, len(y))
        ax.plot(x[window - 1:], np.convolve(y, np.ones(window) / window, mode="valid"), label=f"mean of {window}")
        ax.legend()
    ax.set_xlabel("transitions")
    ax.set_ylabel("episode reward")
    ax.set_title("panning agent: learning curve")
    save_figure(fig, path, dpi=100)
