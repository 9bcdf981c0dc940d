"""gaussheat_gpu: exact heatmaps of many Gaussian kernels, on a CUDA GPU, CPU cores or NumPy.

>>> import gaussheat_gpu as gh
>>> k = gh.Kernels(x=[256, 260], y=[256, 250], sigma_x=[20, 40], sigma_y=[20, 80])
>>> heat = gh.render(k, shape=(512, 512), combine="por", normalize="pdf")
"""

from .api import available_backends, render
from .backends import BackendUnavailable
from .kernel_set import Kernels

__version__ = "0.1.0"
__all__ = ["Kernels", "render", "available_backends", "BackendUnavailable", "__version__"]
