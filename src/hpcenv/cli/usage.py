"""`hpcenv usage`: where the space and the files go."""

from __future__ import annotations

import time
from argparse import Namespace

from hpcenv.cli.context import Context, emit_json, warn


def _date(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d", time.localtime(ts)) if ts else "-"


def usage(ctx: Context, args: Namespace) -> None:
    from hpcenv.report import human_bytes, print_table
    from hpcenv.sitecache import trusted_layers
    from hpcenv.usage import usage_report

    settings = ctx.settings()
    layers = trusted_layers(settings)
    report = usage_report(ctx.layout(), settings.home_quota, layers.paths)
    for message in (*layers.warnings, *report.warnings):
        warn(message)
    if args.json_out:
        emit_json("usage", report)
        return
    rows = [
        (
            r.kind,
            r.name,
            r.path if r.exists else f"{r.path} (missing)",
            human_bytes(r.apparent_bytes),
            human_bytes(r.unique_bytes),
            r.files,
            _date(r.last_used),
        )
        for r in (report.home, report.storage, *report.caches, *report.envs)
    ]
    print_table(None, ["kind", "name", "path", "size", "unique", "files", "last used"], rows)
    q = report.home_quota
    if q is None:
        print("home quota: unknown (no `quota` command answer; set home_quota in the site config)")
    else:
        line = f"home quota: {human_bytes(q.used_bytes)} of {human_bytes(q.limit_bytes)}"
        if q.used_percent is not None:
            line += f" ({q.used_percent:.0f}%)"
        if q.files_limit:
            line += f", {q.files} of {q.files_limit} files ({q.files_percent:.0f}%)"
        print(f"{line} [{q.source}]")
    if report.storage_free_bytes is not None:
        print(f"storage free: {human_bytes(report.storage_free_bytes)}")
    if layers.paths:
        site = sum(r.site_bytes for r in report.envs)
        line = (
            f"site package cache: {human_bytes(site)} of your envs' files are the site's "
            "(hardlinked or sharing extents), not counted as yours in 'unique'"
        )
        if not report.site_extents_counted:
            line += "; shared extents not counted (this filesystem cannot tell)"
        print(line)
    print("Next: hpcenv clean --dry-run  (what can be removed safely)")
