"""Checkpoints of an agent's training, without pickles, written so that a crash never leaves one half-loadable.

A checkpoint folder holds `latest.json`, naming the newest complete snapshot `step-<timesteps>/`, which holds
- `state.json`: the algorithm and settings, counters, the last observations, optimizer hyper-parameters,
  the Python / NumPy / action-space random states, the environment's state and the episode log;
- `tensors.safetensors`: policy and target networks, optimizer moments, torch's RNG state, the masks;
- `buffer.npz`: the replay buffer (numpy, read with allow_pickle=False).
A snapshot is written into a temporary folder, flushed, renamed into place (panning.io.atomic_folder), and only
then is `latest.json` replaced (atomically); older snapshots are removed afterwards. Loading reads only what
`latest.json` names.
"""
from __future__ import annotations

import json
import random
import shutil
from operator import attrgetter
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from stable_baselines3.common.base_class import BaseAlgorithm

from ...config import ConfigError
from ...io import atomic_folder, write_text

FORMAT = 1
POINTER = "latest.json"
_BUFFER_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


def exists(folder: Path) -> bool:
    return (Path(folder) / POINTER).is_file()


# -- capture and restore an agent's training state ---------------------------------------------------


def capture(agent: BaseAlgorithm) -> tuple[dict, dict[str, torch.Tensor], dict[str, np.ndarray]]:
    """Everything a stable-baselines3 agent needs to continue exactly: (JSON values, tensors, arrays)."""
    tensors = {f"policy/{k}": v.detach().cpu().contiguous() for k, v in agent.policy.state_dict().items()}
    optimizers = {}
    for name in agent._get_torch_save_params()[0]:
        if name == "policy":
            continue
        state = attrgetter(name)(agent).state_dict()
        plain = {}
        for pid, values in state["state"].items():
            for key, value in values.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optimizer/{name}/{pid}/{key}"] = value.detach().cpu().contiguous()
                else:
                    plain.setdefault(str(pid), {})[key] = value
        optimizers[name] = {"param_groups": state["param_groups"], "plain": plain,
                            "ids": [str(pid) for pid in state["state"]]}
    tensors["rng/torch"] = torch.get_rng_state()
    numpy_state = np.random.get_state()
    values = {
        "num_timesteps": int(agent.num_timesteps), "n_updates": int(getattr(agent, "_n_updates", 0)),
        "episode_num": int(agent._episode_num),
        "last_obs": np.asarray(agent._last_obs).tolist(),
        "last_episode_starts": np.asarray(agent._last_episode_starts).tolist(),
        "optimizers": optimizers,
        "rng": {"python": _listify(random.getstate()),
                "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
                "action_space": agent.action_space.np_random.bit_generator.state},
    }
    arrays = {}
    buffer = getattr(agent, "replay_buffer", None)
    if buffer is not None:
        arrays = {name: getattr(buffer, name) for name in _BUFFER_ARRAYS}
        values["buffer"] = {"pos": int(buffer.pos), "full": bool(buffer.full)}
    return values, tensors, arrays


def restore(agent: BaseAlgorithm, values: dict, tensors: dict[str, torch.Tensor],
            arrays: dict[str, np.ndarray]) -> None:
    """Put a freshly made agent (same algorithm, settings and environment) into a captured state."""
    agent.policy.load_state_dict({k[len("policy/"):]: v for k, v in tensors.items() if k.startswith("policy/")})
    for name, saved in values["optimizers"].items():
        state = {}
        for pid in saved["ids"]:
            prefix = f"optimizer/{name}/{pid}/"
            state[int(pid)] = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            state[int(pid)].update(saved["plain"].get(pid, {}))
        attrgetter(name)(agent).load_state_dict({"state": state, "param_groups": saved["param_groups"]})
    buffer = getattr(agent, "replay_buffer", None)
    if buffer is not None:
        for name in _BUFFER_ARRAYS:
            getattr(buffer, name)[...] = arrays[name]
        buffer.pos, buffer.full = values["buffer"]["pos"], values["buffer"]["full"]
    agent.num_timesteps = values["num_timesteps"]
    if hasattr(agent, "_n_updates"):
        agent._n_updates = values["n_updates"]
    agent._episode_num = values["episode_num"]
    agent._last_obs = np.asarray(values["last_obs"], dtype=np.float32)
    agent._last_episode_starts = np.asarray(values["last_episode_starts"], dtype=bool)
    rng = values["rng"]
    random.setstate(_tuplify(rng["python"]))
    np.random.set_state((rng["numpy"][0], np.asarray(rng["numpy"][1], dtype=np.uint32), *rng["numpy"][2:]))
    agent.action_space.np_random.bit_generator.state = rng["action_space"]
    torch.set_rng_state(tensors["rng/torch"])


def _listify(value):
    return [_listify(v) for v in value] if isinstance(value, (tuple, list)) else value


def _tuplify(value):
    return tuple(_tuplify(v) for v in value) if isinstance(value, list) else value


# -- the folder ----------------------------------------------------------------------------------------


def save(folder: Path, values: dict, tensors: dict[str, torch.Tensor], arrays: dict[str, np.ndarray]) -> Path:
    """Write one snapshot and point `latest.json` at it; returns the snapshot's folder."""
    folder = Path(folder)
    name = f"step-{values['num_timesteps']:09d}"
    with atomic_folder(folder / name) as tmp:  # a snapshot of the same step that latest.json may name is replaced
        (tmp / "state.json").write_text(json.dumps({"format": FORMAT, **values}))
        save_file(tensors, str(tmp / "tensors.safetensors"))
        with open(tmp / "buffer.npz", "wb") as f:
            np.savez(f, **arrays)
    write_text(folder / POINTER, json.dumps({"snapshot": name}))
    for other in folder.iterdir():
        if other.is_dir() and other.name != name and (other.name.startswith("step-") or other.name.endswith(".tmp")):
            shutil.rmtree(other, ignore_errors=True)
    return folder / name


def load(folder: Path) -> tuple[dict, dict[str, torch.Tensor], dict[str, np.ndarray]]:
    """The snapshot `latest.json` names, as (values, tensors, arrays); a ConfigError of `checkpoint` naming the
    file that is damaged, or the snapshot's state.json if it is of another format."""
    folder = Path(folder)
    file = folder / POINTER
    try:
        snapshot = folder / json.loads(file.read_text())["snapshot"]
        file = snapshot / "state.json"
        values = json.loads(file.read_text())
        file = snapshot / "tensors.safetensors"
        tensors = load_file(str(file))
        file = snapshot / "buffer.npz"
        with np.load(file, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, KeyError, TypeError, ValueError, SafetensorError) as error:  # ValueError: JSON's, numpy's
        problem = f"damaged or not a panning agent checkpoint ({error})"
    else:
        file = snapshot / "state.json"
        problem = None if values.get("format") == FORMAT else f"unknown format {values.get('format')!r}"
    if problem is not None:
        raise ConfigError("checkpoint", f"{str(file)!r}: {problem}")
    return values, tensors, arrays
