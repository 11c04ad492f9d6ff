"""The old pytorch/nvidia channel recipe and its conda-forge equivalent."""

from __future__ import annotations

import pytest

from hpcenv.oldrecipe import old_recipe

# -------------------------------------------------------------------------------- old recipe


def test_old_pytorch_recipe_becomes_conda_forge_with_gpu():
    recipe = old_recipe(
        ["pytorch", "torchvision", "torchaudio", "pytorch-cuda=12.1"], ["pytorch", "nvidia"]
    )
    assert recipe is not None
    assert recipe.specs == ("pytorch", "torchvision", "torchaudio")
    assert recipe.channels == ("conda-forge",)
    assert recipe.gpu and recipe.requested_cuda == "12.1"
    assert recipe.command == "hpcenv create NAME pytorch torchvision torchaudio --gpu"
    assert len(recipe.explanation) == 2 and "pytorch channel" in recipe.explanation[0]
    assert "conda-forge" in recipe.explanation[1]
    assert "--cuda 12.1" in recipe.note


def test_old_recipe_command_uses_the_given_name_and_quotes_specs():
    recipe = old_recipe(["pytorch>=2.1", "pytorch-cuda=12.4"], ["pytorch", "nvidia"], name="ml")
    assert recipe.command == "hpcenv create ml 'pytorch>=2.1' --gpu"


def test_old_recipe_with_cpuonly_stays_on_cpu():
    recipe = old_recipe(["pytorch", "cpuonly"], ["pytorch"])
    assert recipe.specs == ("pytorch",) and not recipe.gpu
    assert recipe.command == "hpcenv create NAME pytorch"


def test_old_recipe_is_recognised_from_channel_prefixed_specs():
    recipe = old_recipe(["pytorch::pytorch", "nvidia::pytorch-cuda=12.4", "numpy"], ["conda-forge"])
    assert recipe.specs == ("pytorch", "numpy") and recipe.requested_cuda == "12.4"


@pytest.mark.parametrize(
    "channel",
    ["https://conda.anaconda.org/pytorch/", "pytorch/linux-64", "nvidia/label/cuda-12.1.0"],
)
def test_old_recipe_is_recognised_from_channel_urls(channel):
    assert old_recipe(["pytorch"], [channel]) is not None


def test_old_recipe_keeps_other_channels_after_conda_forge():
    recipe = old_recipe(["pytorch", "pysam"], ["pytorch", "nvidia", "bioconda", "conda-forge"])
    assert recipe.channels == ("conda-forge", "bioconda")
    assert recipe.command == "hpcenv create NAME pytorch pysam -c bioconda --gpu"


def test_pytorch_cuda_alone_marks_the_old_recipe():
    assert old_recipe(["pytorch", "pytorch-cuda=11.8"], []) is not None


@pytest.mark.parametrize(
    ("specs", "channels"),
    [(["pytorch"], ["conda-forge"]), (["numpy"], ["pytorch"]), (["pytorch"], [])],
)
def test_conda_forge_recipes_are_not_the_old_recipe(specs, channels):
    assert old_recipe(specs, channels) is None
