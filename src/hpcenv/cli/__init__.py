"""The command line: parse, call one core function, render its result. Nothing else.

`main` is the one error boundary: whatever is raised below it becomes one line on stderr and an
exit code (`hpcenv.cli.boundary`): an `HpcenvError` its own (2 bad input or refused, 1 failed),
an OSError what the system refused and a hint, anything else an "internal error" line (the
traceback with HPCENV_DEBUG=1). A Typer/Click usage error (unknown flag, missing argument) is
one line too, and exits 2.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--version"]:  # the hot path: no Typer, no Rich, no rattler
        from hpcenv import __version__

        print(f"hpcenv {__version__}")
        return
    try:
        code = _dispatch(args)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        print("hpcenv: interrupted", file=sys.stderr)
        sys.exit(130)
    except BaseException as exc:  # noqa: BLE001 - the boundary: every error becomes one line
        from hpcenv.cli.boundary import report

        sys.exit(report(exc))
    sys.exit(code)


def _dispatch(args: list[str]) -> int:
    if args[:1] == ["activate"]:  # the other hot path: eval "$(hpcenv activate NAME)"
        from hpcenv.cli.fast import activate

        code = activate(args[1:])
        if code is not None:
            return code
    import typer

    from hpcenv.errors import EXIT_USAGE

    click_usage_error = typer.BadParameter.__mro__[1]  # click's UsageError, as Typer bundles it
    try:
        from hpcenv.cli.app import app

        code = app(args=args, prog_name="hpcenv", standalone_mode=False)
        return code if isinstance(code, int) else 0
    except click_usage_error as exc:
        if type(exc).__name__ == "NoArgsIsHelpError" and exc.ctx is not None:
            print(exc.ctx.get_help())
            return 0
        where = exc.ctx.command_path if exc.ctx is not None else "hpcenv"
        message = " ".join(exc.format_message().split())
        print(f"hpcenv: error: {message} (hint: see `{where} --help`)", file=sys.stderr)
        return EXIT_USAGE
    except typer.Abort:
        print("hpcenv: aborted; nothing changed", file=sys.stderr)
        return EXIT_USAGE
