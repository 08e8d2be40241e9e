"""Entry point: runs the Typer app and turns every OmnisegError into one clear line + exit 2."""

from __future__ import annotations

import sys
import traceback

from omniseg.errors import OmnisegError

EXIT_USAGE = 2
EXIT_INTERNAL = 1
EXIT_INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    from omniseg.cli.app import app

    try:
        app(args=args, prog_name="omniseg")  # standalone: handles --help and usage errors
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except OmnisegError as exc:
        if debug:
            traceback.print_exc()
        print(f"omniseg: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("omniseg: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if debug:
            traceback.print_exc()
        print(
            f"omniseg: internal error: {type(exc).__name__}: {exc} (rerun with --debug for details)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


def run() -> None:
    sys.exit(main())
