"""`hpcenv setup`: moving the redirected directories (`~/.cache`, `~/.conda`, ...) to storage
and back.

The promise: a file that is in the source directory at any moment before the link is in place
ends up in the destination or under `STORAGE/.hpcenv/conflicts/<time>/`, never deleted,
whatever runs beside hpcenv, whenever it is killed and however often it is re-run.

`plan.plan_setup` / `plan.plan_undo` look at the filesystem and return a plan (pure: no changes; they
refuse, exit 2, what cannot work before anything moves); `execute.execute` carries it out under two
locks (this home, this storage root), journaling each phase. Setup of one directory:

1. Across filesystems, copy `~/.cache` into `STORAGE/.hpcenv/staging/.cache` while it stays in
   use (journal: `copied`). Running out of space here changes nothing.
2. Swap: `~/.cache.hpcenv-moving` is made a symlink to `STORAGE/.cache` and exchanged with
   `~/.cache` in one atomic rename (two renames where the filesystem lacks RENAME_EXCHANGE).
   From then on new files land in storage; the old directory is aside (journal: `swapped`).
3. Merge the staging copy into `STORAGE/.cache` by renames (`drain.Mover.drain`; `merged`).
4. Drain the aside directory into `STORAGE/.cache`: by renames on one filesystem; across two,
   each entry is removed only once checked identical to its copy at that moment, and what is
   new or changed (written through open descriptors or working directories) is copied or kept
   in conflicts. Then the journal says `linked`.

`--undo` is the mirror image (`copied`, `unlinked`, `merged`, `restored`): `~/.cache` becomes
a real directory at once and `STORAGE/.cache` is drained into it. Each step looks at the
filesystem to see what is left to do, so a re-run finishes an interrupted run and either
direction takes over from the other (`--undo` after a killed setup moves back what had moved).
The journal keeps only what the filesystem cannot show: that the staging copy is complete
(`copied`) and merged (`merged`), the aside it was copied from (`swapped`), and the source
filesystem's time before the copy (`clock`, which lets the drain skip re-reading files not
changed since: see `compare.identical`).

The modules: `plan` (the plans, pure), `checks` (what planning looks at and refuses), `execute`
(the locks, the journal, the report), `phases` (one directory's steps), and the tree
primitives below them: `compare` (what a merge does with one entry), `survey` (counting and
the conflicts a run will meet), `copy` (the bulk copy across filesystems), `drain` (moving
everything out of a directory without losing a file), `renames` (renameat2).
"""

from hpcenv.setup.execute import SetupReport, dry_run_report, execute, settled_plan
from hpcenv.setup.phases import DirResult
from hpcenv.setup.plan import DirPlan, MigrationPlan, plan_setup, plan_undo

__all__ = [
    "DirPlan",
    "DirResult",
    "MigrationPlan",
    "SetupReport",
    "dry_run_report",
    "execute",
    "plan_setup",
    "plan_undo",
    "settled_plan",
]
