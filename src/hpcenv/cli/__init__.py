"""The command line: parse, call one core function, render its result. Nothing else.

`cli.table` lists every command and its arguments once; `cli.parser` builds argparse from it;
each command's handler lives in `cli/<command>.py` and is imported only when it runs.

`main` is the one error boundary: whatever is raised below it becomes one line on stderr and an
exit code (`hpcenv.cli.boundary`): an `HpcenvError` its own (2 bad input or refused, 1 failed),
an OSError what the system refused and a hint, anything else an "internal error" line (the
traceback with HPCENV_DEBUG=1). A usage error (unknown flag, missing argument) is one line too,
and exits 2.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--version"]:  # the hot path: not even the parser
        from hpcenv import __version__

        print(f"hpcenv {__version__}")
        return
    try:
        code = dispatch(args)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        print("hpcenv: interrupted", file=sys.stderr)
        sys.exit(130)
    except BaseException as exc:  # noqa: BLE001 - the boundary: every error becomes one line
        from hpcenv.cli.boundary import report

        sys.exit(report(exc))
    sys.exit(code)


def dispatch(args: list[str]) -> int:
    """Parse `args` and run the command's handler; its exit code."""
    from hpcenv.cli.context import Context
    from hpcenv.cli.parser import help_text, parse

    command, ns = parse(args)
    if getattr(ns, "version", False):
        from hpcenv import __version__

        print(f"hpcenv {__version__}")
        return 0
    if command is None:
        print(help_text())
        return 0
    module, _, function = command.handler.partition(":")
    name = f"hpcenv.cli.{module}"
    __import__(name)  # the handler's module, only now (importlib would cost activate its import)
    handler = getattr(sys.modules[name], function)
    code = handler(Context(ns), ns)
    return code if isinstance(code, int) else 0
