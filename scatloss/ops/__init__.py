"""Fused kernels (Triton) behind the functional API, and the backend choice.

``backend="auto"`` picks the Triton kernels for CUDA tensors when Triton is installed and the PyTorch
reference path otherwise. ``backend="triton"`` forces the kernels; on CPU tensors this needs the
Triton interpreter (``TRITON_INTERPRET=1`` set before Triton is imported), which is how CI tests them.
"""

from __future__ import annotations

import importlib.util
import os

import torch

__all__ = ["resolve_backend", "triton_available"]


def triton_available() -> bool:
    """Whether the optional dependency ``triton`` is importable."""
    return importlib.util.find_spec("triton") is not None


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def resolve_backend(backend: str, *tensors: torch.Tensor, data: tuple[torch.Tensor, ...] = ()) -> str:
    """Return ``"torch"`` or ``"triton"`` for ``backend`` in ``{"auto", "torch", "triton"}``.

    ``data`` are inputs that the kernels read as data without differentiating them (the SCAT hole mask):
    ``"auto"`` keeps the PyTorch path when one of them requires grad, so that gradient is not lost.

    Raises:
        RuntimeError: ``backend="triton"`` without Triton installed, or on CPU tensors without
            ``TRITON_INTERPRET=1``.
    """
    if backend == "torch":
        return "torch"
    on_cuda = all(t.is_cuda for t in tensors)
    if backend == "auto":
        wants_data_grad = torch.is_grad_enabled() and any(t.requires_grad for t in data)
        return "triton" if on_cuda and triton_available() and not wants_data_grad else "torch"
    if not triton_available():
        raise RuntimeError("backend='triton' needs the optional dependency triton: pip install 'scatloss[triton]'")
    if not on_cuda and not _interpreting():
        raise RuntimeError(
            "backend='triton' on CPU tensors needs the Triton interpreter: set TRITON_INTERPRET=1 before importing "
            "triton, or use backend='torch'"
        )
    return "triton"
