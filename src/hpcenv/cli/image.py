"""`hpcenv image` (turn an env into one squashfs image) and `hpcenv umount`."""

from __future__ import annotations

from argparse import Namespace

from hpcenv.cli.context import Context, emit_json, warn
from hpcenv.cli.envarg import env_arg


def image(ctx: Context, args: Namespace) -> int:
    from hpcenv import images
    from hpcenv.consent import Consent
    from hpcenv.report import human_bytes

    env, _ = env_arg(ctx, "image", args.env, args.name, args.prefix)
    settings, layout = ctx.settings(), ctx.layout()
    plan = images.plan_convert(layout, settings, env)
    where = plan.name or str(plan.prefix)
    if args.dry_run:
        report = images.ConvertReport(
            plan.name, str(plan.prefix), plan.files, 2, "", 0, 0, plan.unaccounted, dry_run=True
        )
        if args.json_out:
            emit_json("image", report)
            return 0
        print(f"would replace the {plan.files} files of {where} by one image; nothing changed")
        for path in plan.unaccounted:
            print(f"  not in the image (no package has it): {path}")
        return 0
    if not plan.unaccounted or args.force:
        question = f"Replace the {plan.files} files of {where} by one image (the tree is deleted)?"
        consent = Consent(question, f"{question} needs confirmation", "re-run with --yes")
        if not ctx.agree(consent, args.yes):
            ctx.info("nothing changed")
            return 0
    report = images.convert(layout, settings, plan, drop=args.force, progress=ctx.progress)
    for message in report.warnings:
        warn(message)
    if args.json_out:
        emit_json("image", report)
        return 0
    for path in report.dropped:
        ctx.info(f"dropped (no package had it): {path}")
    print(
        f"{where} is an image env now: {report.image_files} files in "
        f"{human_bytes(report.image_bytes)} ({report.image}); {report.files_after} files in "
        f"storage instead of {report.files_before}, in {report.seconds:.1f} s"
    )
    return 0


def umount(ctx: Context, args: Namespace) -> int:
    from hpcenv import images

    target = None
    if args.env is not None or args.name is not None or args.prefix is not None:
        target, _ = env_arg(ctx, "umount", args.env, args.name, args.prefix)
    report = images.unmount(ctx.layout(), ctx.settings(), target)
    if args.json_out:
        emit_json("umount", report)
    else:
        for t in report.tidied:
            if t.what == "stale-mount":
                ctx.info(f"cleaned {t.path} (its squashfuse had died)")
            elif t.what == "dead-build":
                ctx.info(f"removed {t.path} (left by an interrupted build)")
        for r in report.results:
            if r.status == "unmounted":
                print(f"unmounted {r.mount}")
            elif r.status == "in-use":
                print(f"{r.mount} is in use (a command or job runs from it); left mounted")
            else:
                print(f"{r.mount}: {r.status}")
        if not report.results:
            print("nothing mounted" + (f" of {target}" if target else ""))
    return 1 if report.busy else 0
