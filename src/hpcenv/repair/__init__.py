"""`hpcenv repair`: install again exactly the packages of an env that lost files.

`plan_repair` checks the env (`verify.check_prefix`) and decides, per broken package, where
its files come from; nothing is changed. `apply_repair` carries the plan out, journaled.

Conda packages get the same build again (the one in their record), linked from the package
cache as rattler links any install:

    cached       the extracted package in the cache is whole: linked from it
    re-extract   the cached copy is damaged too (a file missing or of another size, or one of
                 the env's damaged files is the cache's own inode: a hardlink shares every
                 change, or unreadable): it is set aside (the cache's trash) and extracted
                 again from the archive at the record's URL
    fetch        the cache lost it: downloaded again from the record's URL

The archive is fetched before the env is touched (`engine.fetch`): rattler, when a download
fails in the middle of an install, has already unlinked the package it replaces. A package
that is neither in the cache nor at its URL (a `file://` channel that lost it is seen while
planning) stops the repair with nothing changed, naming the package and the lock file to
re-create the env from.

PyPI packages (a dist-info no conda record lists) are installed again by uv at the version
their METADATA names (`NAME==VERSION`, with the index options of the env's `pip:` section).
A damaged file that shares its inode with uv's cache means uv's cache holds the damage: the
package is removed from uv's cache first (`uv cache clean NAME`), so uv unpacks it afresh.

The steps (journal `STATE/journal/repair-KEY.jsonl`, KEY from the prefix; each is redone
harmlessly by a re-run, so `hpcenv repair NAME` after a kill finishes the repair):

    saved     the records of the broken packages copied to STATE/repair/KEY/conda-meta
    cache     damaged cache entries set aside; missing ones fetched
    aside     what stands where a package's file belongs (a directory where a file was) is
              moved to PREFIX/etc/hpcenv/repair-aside/; directories that cannot be searched
              get their owner's permission back
    linked    rattler unlinks the packages and links them again (a record it had already
              removed when killed is taken from the saved copy)
    records   each record as it was: rattler writes its own fields only (no requested_spec,
              none of conda's), so the saved record is put back where nothing else differs
    pypi      uv reinstalls
    done      the env's modes and access times (`perms.limit_installed`), the copies removed

The package: `model` (plan and report), `checks` (what is known of a broken package), `plan`
(`plan_repair`), `apply` (`apply_repair`).
"""

from hpcenv.repair.apply import apply_repair
from hpcenv.repair.model import PackageFix, RepairPlan, RepairReport, journal_name
from hpcenv.repair.plan import plan_repair

__all__ = [
    "PackageFix",
    "RepairPlan",
    "RepairReport",
    "apply_repair",
    "journal_name",
    "plan_repair",
]
