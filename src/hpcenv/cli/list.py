"""`hpcenv list` and `hpcenv info`."""

from __future__ import annotations

from argparse import Namespace

from hpcenv.cli.changes import gpu_line, say_recovered
from hpcenv.cli.context import Context, emit_json, warn
from hpcenv.cli.envarg import pick_env, require_env


def list_(ctx: Context, args: Namespace) -> None:
    from hpcenv.envs import recover_locked
    from hpcenv.envs.info import list_envs
    from hpcenv.report import human_bytes, print_table

    if args.name is not None or args.prefix is not None:
        env, _ = pick_env(ctx, [], args.name, args.prefix)
        _show_info(ctx, require_env(env, "list"), args.json_out, packages_only=True)
        return
    settings, layout = ctx.settings(), ctx.layout()
    say_recovered(ctx, recover_locked(layout, settings))
    result = list_envs(layout, shared_root=settings.shared_root)
    for message in result.warnings:
        warn(message)
    rows = list(result.envs)
    if args.json_out:
        emit_json("list", rows)
        return
    if not rows:
        print("no environments yet; create one with `hpcenv create NAME python`")
        return
    print_table(
        None,
        ["name", "prefix", "made by", "packages", "size", "unique", "files", "changed"],
        [
            (
                (e.name or "-") + (f" [shared by {e.owner}]" if e.owner else ""),
                e.prefix
                + ("" if e.exists else " (missing)")
                + (f" [image v{e.image.version}: {e.image.image_files} files]" if e.image else ""),
                e.made_by,
                e.packages,
                human_bytes(e.apparent_bytes),
                human_bytes(e.unique_bytes),
                e.files,
                _date(e.updated),
            )
            for e in rows
        ],
    )


def _date(ts: float | None) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "-"


def _show_info(ctx: Context, env: str, json_out: bool, packages_only: bool = False) -> None:
    from hpcenv.envs.info import info as env_info
    from hpcenv.report import print_table

    result = env_info(ctx.layout(), ctx.settings(), env)
    for line in result.damaged:
        warn(line)
    if json_out:
        emit_json("info", result)
        return
    if not packages_only:
        print(f"prefix:   {result.prefix}")
        if result.image is not None:
            from hpcenv.report import human_bytes

            img = result.image
            print(
                f"image:    v{img.version}, {img.image_files} files in {human_bytes(img.image_bytes)}"
                f" ({img.image}); mounted at {img.mount}"
            )
        print(f"made by:  {result.made_by}")
        print(f"specs:    {' '.join(result.specs) or '-'}  (from {result.specs_from})")
        print(f"channels: {' '.join(result.channels) or '-'}")
        if result.cuda:
            print(f"cuda:     {result.cuda}")
        if result.pip:
            print(f"pip:      {' '.join(result.pip)}")
        if result.pending or result.pypi_pending:
            print(f"WARNING: an install was interrupted; repair it with `hpcenv install {env}`")
    print_table(
        None,
        ["package", "version", "build", "channel"],
        [(p.name, p.version, p.build, p.channel) for p in result.packages],
    )
    if result.pypi:
        print_table(
            None,
            ["PyPI package", "version", "from"],
            [(p.name, p.version, p.source) for p in result.pypi],
        )
    if result.gpu is not None and (result.gpu.cuda_builds or result.gpu.cpu_builds):
        print(gpu_line(result.gpu))


def info(ctx: Context, args: Namespace) -> None:
    env, _ = pick_env(
        ctx, [args.env] if args.env else [], args.name, args.prefix, specs_follow=False
    )
    env = require_env(env, "info")
    _show_info(ctx, env, args.json_out)
