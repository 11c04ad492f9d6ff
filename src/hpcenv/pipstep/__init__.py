"""A pip step: PyPI packages into a conda env with uv, never over conda's files.

A pip step (an environment.yml `pip:` section, `hpcenv install ENV --pip REQ...`, or the PyPI
part of a lock file) leaves the env untouched until its last stage:

1. **resolve**: `uv pip install --dry-run` against the env's interpreter says which
   distributions would be installed (what the env already has, conda's numpy too, is kept);
   `uv pip compile --no-deps --format pylock.toml` then names the exact artifact of each: its
   URL and sha256. A lock file's PyPI part is that already.
2. **trial**: that set is installed with `--prefix` into a throwaway directory in hpcenv's
   state dir: uv downloads or builds every artifact into its cache, and the trial's dist-info
   RECORDs list the files each package installs.
3. **check**: a file a conda package owns (conda-meta `files`) would be overwritten, or a
   distribution a conda package installed would be replaced: refused (`RefusedError`, exit 2)
   naming both packages and the fix, take it from conda. conda-pack, which `pack`/`stage`
   rely on, refuses such an env (conda/conda-pack#98, #197, #243), and removing the conda
   package would delete the PyPI package's files.
4. **install**: the same artifacts, hashes required, into the env (from uv's cache). Scripts
   written for a build prefix are pointed at the final one; uv's `PREFIX/.lock`, created 0666
   on purpose (astral-sh/uv#11328, #16845), loses the write bits the umask denies. Then the
   record (`pypi`).

An install in place is marked by `PREFIX/etc/hpcenv/pypi-pending.json` until it is recorded;
the next pip step, or `hpcenv install ENV`, finishes it (uv installs the same set again).

The package: `uv` (running uv), `plan` (steps 1-3), `apply` (step 4), `install` (`install --pip`).
"""

from hpcenv.pipstep.apply import PipPlan, apply, finish_pending, limit_lock_file
from hpcenv.pipstep.install import finish_interrupted, install_into
from hpcenv.pipstep.plan import check, expand, plan, read_requirements, requirement_name
from hpcenv.pipstep.uv import find_uv, python_of, run_uv

__all__ = [
    "PipPlan",
    "apply",
    "check",
    "expand",
    "find_uv",
    "finish_interrupted",
    "finish_pending",
    "install_into",
    "limit_lock_file",
    "plan",
    "python_of",
    "read_requirements",
    "requirement_name",
    "run_uv",
]
