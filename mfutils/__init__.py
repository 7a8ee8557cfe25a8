"""mfutils: matrix-factorization recommenders on MovieLens, the package behind the notebooks."""

from mfutils.device import get_device, seed_everything

__version__ = "0.1.0"

__all__ = ["get_device", "seed_everything", "__version__"]
