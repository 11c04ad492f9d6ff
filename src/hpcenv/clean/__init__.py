"""`hpcenv clean`: remove what no environment needs, safely.

`plan.plan_clean` decides (changing nothing) what can go and why; `execute.execute_clean`
removes it under the storage lock, journaled, and reports only what is really gone.
"""

from hpcenv.clean.execute import CleanReport, dry_run_report, execute_clean
from hpcenv.clean.plan import CleanItem, CleanKind, CleanPlan, CleanStatus, plan_clean

__all__ = [
    "CleanItem",
    "CleanKind",
    "CleanPlan",
    "CleanReport",
    "CleanStatus",
    "dry_run_report",
    "execute_clean",
    "plan_clean",
]
