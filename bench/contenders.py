"""What every benchmark workload is made of: the :class:`Workload` record and the peers' loaders (JAX on
the CPU, PyTorch), each None where it is not installed."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Workload:
    name: str
    unit: str  # what one timing covers, e.g. "epoch"
    units: int  # how many units one call runs (time is reported per unit)
    contenders: dict = field(default_factory=dict)  # name -> callable
    limit: str | None = None  # contender name that is the hardware floor
    baseline: str = "gradloop"
    notes: list = field(default_factory=list)
    input_bytes: int = 0  # size of X, for memory ratios
    close: object = None  # called once the workload is measured: remove its files, stop its cluster


def _jax():
    """JAX on the CPU, float64 enabled (the chapter's loops are float64), or None when not installed."""
    try:
        import jax
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_platforms", "cpu")
    return jax


def _torch():
    try:
        import torch

        torch.set_num_threads(max(1, torch.get_num_threads()))
        return torch
    except ImportError:
        return None
