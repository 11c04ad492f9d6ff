"""Jupyter kernels that start inside the activated env (JupyterHub, Open OnDemand).

`python -m ipykernel install` writes a kernel whose `argv` runs the env's python directly:
`etc/conda/activate.d` never runs (CUDA, GDAL, PROJ variables missing), the site's module
lines are not loaded, and users add `conda init` to ~/.bashrc to make up for it. The kernel
hpcenv writes (`kernel.spec`: its files, names and the data dir) starts a small launcher
that activates the env first, then becomes the kernel.

`write_kernel` refuses an env that is not trusted (`trust.resolve_for_use`) or has no
ipykernel; `list_kernels` finds every kernel hpcenv wrote by its `metadata.hpcenv`, so
`--list`, the removal of an env and `doctor` find the kernels of an env whatever their name.

Writes are atomic (a temp file renamed over the old one; kernel.json last, so Jupyter never
sees a kernel whose launcher is missing); removal unlinks kernel.json first, so an interrupted
removal leaves no kernel behind, and a re-run finishes it. Nothing created is world-writable,
and a kernels dir that another user owns or anyone may write is refused.

The package: `spec` (names, the data dir, the files rendered), `model`, `read` (ipykernel,
listing), `write`, `remove`.
"""

from hpcenv.kernel.model import Kernel, KernelList, KernelReport
from hpcenv.kernel.read import has_ipykernel, list_kernels
from hpcenv.kernel.remove import removal_command, remove_kernel, remove_kernels_of, stale_kernels
from hpcenv.kernel.write import write_kernel

__all__ = [
    "Kernel",
    "KernelList",
    "KernelReport",
    "has_ipykernel",
    "list_kernels",
    "removal_command",
    "remove_kernel",
    "remove_kernels_of",
    "stale_kernels",
    "write_kernel",
]
