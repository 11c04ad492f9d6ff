"""The command line: parse, call one core function, render its result. Nothing else.

`main` is the one place where errors become exit codes: an `HpcenvError` prints one line on
stderr and exits with its code (2 bad input or refused, 1 failed); a Typer/Click usage error
(unknown flag, missing argument) is one line too, and exits 2.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--version"]:  # the hot path: no Typer, no Rich, no rattler
        from hpcenv import __version__

        print(f"hpcenv {__version__}")
        return
    from hpcenv.errors import EXIT_USAGE, HpcenvError

    if args[:1] == ["activate"]:  # the other hot path: eval "$(hpcenv activate NAME)"
        from hpcenv.cli.fast import activate

        try:
            code = activate(args[1:])
        except HpcenvError as exc:
            print(f"hpcenv: error: {exc.one_line()}", file=sys.stderr)
            sys.exit(exc.exit_code)
        if code is not None:
            sys.exit(code)
    import typer

    click_usage_error = typer.BadParameter.__mro__[1]  # click's UsageError, as Typer bundles it
    try:
        from hpcenv.cli.app import app

        code = app(args=args, prog_name="hpcenv", standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except click_usage_error as exc:
        if type(exc).__name__ == "NoArgsIsHelpError" and exc.ctx is not None:
            print(exc.ctx.get_help())
            sys.exit(0)
        where = exc.ctx.command_path if exc.ctx is not None else "hpcenv"
        message = " ".join(exc.format_message().split())
        print(f"hpcenv: error: {message} (hint: see `{where} --help`)", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except typer.Abort:
        print("hpcenv: aborted; nothing changed", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except HpcenvError as exc:
        print(f"hpcenv: error: {exc.one_line()}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("hpcenv: interrupted", file=sys.stderr)
        sys.exit(130)
