"""Device choice and seeding: the two helpers every notebook calls first."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

DEVICE_ENV = "MFUTILS_DEVICE"


def get_device(preferred: str | torch.device | None = None) -> torch.device:
    """The device to compute on: ``preferred``, else ``$MFUTILS_DEVICE``, else cuda, mps, cpu.

    Parameters
    ----------
    preferred : str or torch.device, optional
        Explicit choice such as ``"cpu"`` or ``"cuda:1"``; wins over the environment.

    Raises
    ------
    ValueError
        When the requested device is not available on this machine.
    """
    choice = preferred if preferred is not None else os.environ.get(DEVICE_ENV) or None
    if choice is not None:
        device = torch.device(choice)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                f"device {str(choice)!r} requested (argument or ${DEVICE_ENV}) "
                "but CUDA is not available here; use 'cpu'"
            )
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError(
                f"device {str(choice)!r} requested (argument or ${DEVICE_ENV}) "
                "but MPS is not available here; use 'cpu'"
            )
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices); return a CPU generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - seeds code that still uses the global state
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
