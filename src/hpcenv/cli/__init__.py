"""The command line: parse, call one core function, render its result. Nothing else.

`main` is the one place where errors become exit codes: an `HpcenvError` prints one line on
stderr and exits with its code (2 bad input or refused, 1 failed); Typer/Click usage errors
exit 2 as well.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--version"]:  # the hot path: no Typer, no Rich, no rattler
        from hpcenv import __version__

        print(f"hpcenv {__version__}")
        return
    from hpcenv.errors import HpcenvError

    try:
        from hpcenv.cli.app import app

        app(args=args, prog_name="hpcenv")
    except HpcenvError as exc:
        print(f"hpcenv: error: {exc.one_line()}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("hpcenv: interrupted", file=sys.stderr)
        sys.exit(130)
