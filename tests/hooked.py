"""A small channel of packages whose activation scripts are written as real packages write
them (gdal, proj): bash syntax, unset variables read, failing commands. Kept apart from
`demo_packages()` so the demo channel's package counts stay as other tests expect."""

from __future__ import annotations

import pytest

from hpcenv.channel import PackageRecipe, build_channel
from tests.channels import Channel

# as gdal's activate.sh does: bash's [[ ]], and $GDAL_DATA read while it may be unset
GDAL_ACTIVATE = """\
if [[ -n "$GDAL_DATA" ]]; then
    export _CONDA_SET_GDAL_DATA="$GDAL_DATA"
fi
export GDAL_DATA="$CONDA_PREFIX/share/gdal"
test -d "$CONDA_PREFIX/share/gdal/plugins"  # fails: errexit would stop here
"""
GDAL_DEACTIVATE = """\
if [[ -n "$_CONDA_SET_GDAL_DATA" ]]; then
    export GDAL_DATA="$_CONDA_SET_GDAL_DATA"
    unset _CONDA_SET_GDAL_DATA
else
    unset GDAL_DATA
fi
"""


def hooked_packages() -> list[PackageRecipe]:
    return [
        PackageRecipe(
            "gdal-like",
            "1.0",
            files={
                "etc/conda/activate.d/gdal-like_activate.sh": GDAL_ACTIVATE,
                "etc/conda/deactivate.d/gdal-like_deactivate.sh": GDAL_DEACTIVATE,
                "share/gdal/gcs.csv": "code,name\n4326,WGS 84\n",
            },
        ),
        PackageRecipe(
            "late-hook",
            "1.0",
            files={"etc/conda/activate.d/late-hook.sh": "export LATE_HOOK=ran\n"},
        ),
    ]


@pytest.fixture(scope="session")
def hooks_channel(tmp_path_factory) -> Channel:
    path = tmp_path_factory.mktemp("hooks-channel")
    return Channel(path, build_channel(path, hooked_packages()))
