"""RL Panning: the reinforcement-learning agent that picks Panning's index weights (docs/agent.md).

env.py        the environment (PanningEnv; PanningLanes, B lanes in lock step) and its curriculum
vec_env.py    the stable-baselines3 VecEnv over the lanes
agent.py      training, saving, loading and rolling out an agent; the agents the package ships (agents/)
checkpoint.py the resumable training checkpoint, a folder of safetensors, numpy and JSON files
"""
