"""Suite-wide test settings."""

import os

import pytest

# If rclpy is present (a ROS 2 install, or the PyPI wheels), DDS must stay on this machine: no multicast discovery
# on external interfaces from a test run.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # Jazzy and later
os.environ.setdefault("ROS_LOCALHOST_ONLY", "1")  # Humble
os.environ.setdefault("ROS_DOMAIN_ID", "73")
# Headless rendering for the simulator tests.
os.environ.setdefault("MUJOCO_GL", "egl")

# Property tests explore with hypothesis; on CI (CI=true) the examples are derandomized so a run is reproducible,
# and a failure prints the example that broke it.
try:
    from hypothesis import settings

    settings.register_profile("ci", derandomize=True, print_blob=True)
    settings.register_profile("dev", print_blob=True)
    settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))
except ImportError:  # hypothesis is a dev dependency; without it the property tests are not collected anyway
    pass


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """The 2 shared CI cores are oversubscribed: spinning intra-op threads make small tensor ops (tiny models,
    backward passes) up to 50x slower, so the suite runs torch on one thread."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def tiny_sim_checkpoint(tmp_path):
    """A random tiny MoLe-VLA checkpoint for the simulator's cameras (scene, wrist), fast to run: 2 DDIM steps
    without guidance (the action head dominates a tiny model's time, and the loop around it is what is tested).
    Returns (checkpoint directory, model config)."""
    torch = pytest.importorskip("torch")
    from mole_vla_ros.model.checkpoint import save_checkpoint
    from mole_vla_ros.model.configuration import MoLeVLAConfig
    from mole_vla_ros.model.modeling import MoLeVLA
    from mole_vla_ros.model.normalization import ActionNormalizer

    torch.manual_seed(0)
    overrides = {"action_head.ddim_steps": 2, "action_head.cfg_scale": 1.0}
    config = MoLeVLAConfig.preset("tiny", camera_names=("scene", "wrist"), chunk_size=8, **overrides)
    ckpt = tmp_path / "ckpt"
    save_checkpoint(str(ckpt), MoLeVLA(config), ActionNormalizer.identity(config.action_dim))
    return ckpt, config
