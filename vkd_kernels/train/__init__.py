"""The reference trainer: vkd-kernels' losses in real training, called through the
public API exactly as a user would.

* ``data``: the embedded synthetic motion benchmark, frame folders, PyAV videos;
* ``models``: 3-D ResNets, I3D and Top-heavy I3D, TSM ResNets (no torchvision);
* ``hooks.FeatureHooks``: stage features of any ``nn.Module`` without editing it;
* ``methods``: ce, kd, at, fitnet, collab (+ ablations), by name;
* ``engine.fit``: one run (AMP, DDP, atomic checkpoints, exact resume);
* ``cli``: the ``vkd`` command (train, distill, evaluate, reproduce).
"""
from .hooks import FeatureHooks, as_video

__all__ = ["FeatureHooks", "as_video"]
