"""Environments: create, install, remove (packages or the whole env).

A named environment lives at `~/.conda/envs/NAME` (in storage once `hpcenv setup` ran) and is
registered in `~/.conda/environments.txt`, so the site's conda and mamba see it. What the user
asked for (specs, channels, pip requirements, CUDA) is kept beside the packages in
`PREFIX/etc/hpcenv/env.json`, and written in conda's own formats too: a `conda-meta/history`
entry with `# update specs:` / `# remove specs:` and each record's `requested_spec`.

Create, replace (`--force`) and delete are journaled (`envs.journal`): a kill at any instant
leaves the old env or the new one under the name, and the next command finishes or rolls back.
Install and remove follow the rule in `envs.plan`: packages the user did not name are never
removed, downgraded or rebuilt unless the solve cannot succeed otherwise, and then only with
consent. Updates in place are marked by `PREFIX/etc/hpcenv/pending.json` until they finish;
re-running `hpcenv install ENV` repairs an interrupted one.

The modules: `create` (the request and the build), `update` (install and remove),
`delete`, `plan` (what was requested, the changes a plan makes, the report), `journal`
(crash-safe create/replace/delete and their recovery), `checks` (refusals before any step),
`info` (list, info, export). PyPI packages (a `pip:`
section, a lock's PyPI part) go through `pipstep`. Discovery and the registries are in
`registry`; conda's own formats in `condameta`.
"""

from hpcenv.envs.create import CreateRequest, create, create_request
from hpcenv.envs.delete import delete, delete_consent
from hpcenv.envs.journal import Recovered, RecoveryAction, recover_locked
from hpcenv.envs.plan import ChangeKind, ChangeReport, EnvMeta, PackageChange, PackageLine
from hpcenv.envs.update import UpdatePlan, apply_update, plan_update

__all__ = [
    "ChangeKind",
    "ChangeReport",
    "CreateRequest",
    "EnvMeta",
    "PackageChange",
    "PackageLine",
    "Recovered",
    "RecoveryAction",
    "UpdatePlan",
    "apply_update",
    "create",
    "create_request",
    "delete",
    "delete_consent",
    "plan_update",
    "recover_locked",
]
