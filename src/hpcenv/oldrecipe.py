"""The PyTorch recipe of the pytorch/nvidia channels, and what to do on conda-forge instead.

`pytorch torchvision pytorch-cuda=12.1 -c pytorch -c nvidia` no longer works: the pytorch
channel stopped publishing conda packages after PyTorch 2.5. `old_recipe` recognises it and
returns its conda-forge equivalent (CUDA builds asked with `--gpu`), which `create` offers.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

_OLD_CHANNELS = frozenset({"pytorch", "nvidia", "pytorch-nightly"})
_PYTORCH_FAMILY = frozenset({"pytorch", "torchvision", "torchaudio", "pytorch-cuda", "cpuonly"})
_DROPPED = frozenset({"pytorch-cuda", "cpuonly", "pytorch-mutex"})


@dataclass(frozen=True)
class OldRecipe:
    """The `-c pytorch -c nvidia` recipe, and its conda-forge equivalent."""

    explanation: tuple[str, str]
    specs: tuple[str, ...]
    channels: tuple[str, ...]
    gpu: bool
    requested_cuda: str | None  # from pytorch-cuda=12.1; not pinned, see `note`
    note: str | None
    command: str


def _split_channel(spec: str) -> tuple[str, str]:
    """("channel::", the rest) of a spec, or ("", spec)."""
    channel, sep, body = spec.strip().rpartition("::")
    return (channel + sep, body)


_SUBDIR = re.compile(r"^(?:noarch|(?:linux|osx|win|emscripten|wasi)-\w+)$")


def _channel_name(channel: str) -> str:
    """ "pytorch", "https://conda.anaconda.org/pytorch/", "nvidia/label/cuda-12.1" -> the name."""
    parts = [p for p in channel.strip().lower().split("/") if p]
    if "label" in parts:
        parts = parts[: parts.index("label")]
    while parts and _SUBDIR.match(parts[-1]):
        parts.pop()
    return parts[-1] if parts else ""


def old_recipe(
    specs: Sequence[str], channels: Sequence[str], name: str = "NAME"
) -> OldRecipe | None:
    """Recognise PyTorch from the pytorch/nvidia channels and say what to do on conda-forge.

    pytorch-cuda=X is not turned into a `cuda-version X.*` pin: on conda-forge the CUDA build
    follows the driver (`__cuda`), and conda-forge builds PyTorch for its own CUDA versions
    (12.6, 12.8, 12.9, …), so a 12.1 pin would usually leave no build to install.
    """
    prefixed = [_channel_name(_split_channel(s)[0][:-2]) for s in specs if "::" in s]
    old_channels = {_channel_name(c) for c in channels} | set(prefixed)
    if not any(f in s.lower() for s in specs for f in _PYTORCH_FAMILY):
        return None  # no spec can name the family: skip parsing them (the engine's import)
    from hpcenv import engine

    parts = [engine.parse_spec(s) for s in specs]
    spec_names = [p.name for p in parts]
    uses_family = any(n in _PYTORCH_FAMILY for n in spec_names)
    if not uses_family or not (old_channels & _OLD_CHANNELS or "pytorch-cuda" in spec_names):
        return None
    requested_cuda = None
    new_specs = []
    for spec, part in zip(specs, parts, strict=True):
        spec_name = part.name
        if spec_name == "pytorch-cuda":
            found = re.search(r"(\d+(?:\.\d+)?)", part.version or "")
            requested_cuda = found[1] if found else None
        if spec_name in _DROPPED:
            continue
        prefix, body = _split_channel(spec)
        new_specs.append(body if _channel_name(prefix[:-2]) in _OLD_CHANNELS else spec.strip())
    gpu = "cpuonly" not in spec_names
    extra = [
        c
        for c in dict.fromkeys(channels)
        if _channel_name(c) not in _OLD_CHANNELS | {"conda-forge"}
    ]
    command = ["hpcenv", "create", name, *new_specs]
    for channel in extra:
        command += ["-c", channel]
    if gpu:
        command.append("--gpu")
    note = None
    if requested_cuda:
        note = (
            f"pytorch-cuda={requested_cuda} is not pinned: conda-forge picks the CUDA build the "
            f"GPU driver supports; on a node without a GPU add --cuda {requested_cuda} "
            "or set gpu.cuda_version in the site config"
        )
    second = (
        "conda-forge carries CUDA builds of PyTorch: drop -c pytorch -c nvidia and pytorch-cuda, "
        "and ask for the CUDA build with --gpu."
        if gpu
        else "conda-forge carries CPU builds of PyTorch: drop -c pytorch and cpuonly."
    )
    return OldRecipe(
        explanation=(
            "The pytorch channel stopped publishing conda packages after PyTorch 2.5, "
            "and the nvidia channel was only needed beside it.",
            second,
        ),
        specs=tuple(new_specs),
        channels=("conda-forge", *extra),
        gpu=gpu,
        requested_cuda=requested_cuda,
        note=note,
        command=shlex.join(command),
    )
