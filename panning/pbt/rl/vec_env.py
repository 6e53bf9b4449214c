"""B panning episodes sharing one network as one stable-baselines3 VecEnv (batched candidates; docs/agent.md).

Every `step` advances all B lanes of a PanningLanes together (one saliency call, one top-k call for the B
masks). A lane whose episode ends is reset at once, as stable-baselines3 expects: its info carries the
"terminal_observation" and the finished episode's "episode" = {"r": return, "l": length, "target": sparsity}.
A seed given with `seed()` restarts the whole environment (ranges, curriculum, random stream) at the next reset.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv

from .env import OBSERVATION_SIZE, PanningLanes, sparsity_option


class PanningVecEnv(VecEnv):
    """`lanes` Panning episodes stepped together; every argument but `lanes` as for PanningEnv."""

    render_mode = None

    def __init__(self, model, dataset, input_shape, lanes: int = 8, **options):
        self.core = PanningLanes(model, dataset, input_shape, lanes, **options)
        super().__init__(lanes, gym.spaces.Box(0.0, 1.0, shape=(OBSERVATION_SIZE,), dtype=np.float32),
                         gym.spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32))
        self.returns = np.zeros(lanes)
        self.lengths = np.zeros(lanes, dtype=np.int64)
        self._actions: np.ndarray | None = None

    def reset(self) -> np.ndarray:
        if self._seeds[0] is not None:
            self.core.restart(self._seeds[0])
        observations = np.stack([self._reset_lane(b) for b in range(self.num_envs)])
        self._reset_seeds()
        self._reset_options()
        return observations

    def _reset_lane(self, lane: int) -> np.ndarray:
        observation, _ = self.core.reset_lane(lane, sparsity_option(self._options[lane]))
        self.returns[lane], self.lengths[lane] = 0.0, 0
        return observation

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self):
        if self._actions is None:
            raise RuntimeError("step_wait: call step_async first")
        observations, rewards, dones, infos = self.core.step(self._actions)
        self._actions = None
        self.returns += rewards
        self.lengths += 1
        for b in np.flatnonzero(dones):
            infos[b]["terminal_observation"] = observations[b].copy()
            infos[b]["TimeLimit.truncated"] = False
            infos[b]["episode"] = {"r": float(self.returns[b]), "l": int(self.lengths[b]),
                                   "target": float(self.core.sparsity[b])}
            observations[b] = self._reset_lane(int(b))
        return observations, rewards.astype(np.float32), dones, infos

    def close(self) -> None:
        pass

    # The VecEnv attribute API over the one shared core (every lane answers for the same object).
    def get_attr(self, attr_name, indices=None):
        owner = self.core if hasattr(self.core, attr_name) else self
        return [getattr(owner, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name, value, indices=None) -> None:
        setattr(self.core, attr_name, value)

    def env_method(self, method_name, *method_args, indices=None, **method_kwargs):
        return [getattr(self.core, method_name)(*method_args, **method_kwargs) for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class, indices=None):
        return [False for _ in self._get_indices(indices)]

    # -- checkpointing ----------------------------------------------------------------------------
    def state(self):
        values, tensors = self.core.state()
        return {**values, "returns": self.returns.tolist(), "lengths": self.lengths.tolist()}, tensors

    def load_state(self, values: dict, tensors) -> None:
        self.core.load_state(values, tensors)
        self.returns = np.asarray(values["returns"], dtype=np.float64)
        self.lengths = np.asarray(values["lengths"], dtype=np.int64)
