"""Entry point: runs the Typer app and turns every OmnisegError into one clear line + exit 2."""

from __future__ import annotations

import logging
import os
import shlex
import signal
import sys
import threading
import traceback
from pathlib import Path

from omniseg.cli.options import invoked_as
from omniseg.errors import OmnisegError, printable

EXIT_USAGE = 2
EXIT_INTERNAL = 1
EXIT_INTERRUPTED = 130


SAVED_ON_INTERRUPT = {
    "segment": "finished tiles are kept in {where}",
    "demo": "finished tiles are kept in {where}",
    "train": "the last state is saved in {where}",
    "finetune": "the last state is saved in {where}",
}
OUT_FLAGS = ("-o", "--out")


def _out_value(args: list[str]) -> str:
    for i, a in enumerate(args):
        if a in OUT_FLAGS and i + 1 < len(args):
            return args[i + 1]
        for flag in OUT_FLAGS:
            if a.startswith(flag + "="):
                return a.split("=", 1)[1]
    return "OUT"


def _kept_where(command: str, args: list[str]) -> str:
    """The real folder(s) a stopped run keeps its work in."""
    out = _out_value(args)
    if command in ("train", "finetune"):
        return (
            os.path.join(out, "train", "last")
            if command == "finetune"
            else os.path.join(out, "last")
        )
    slides = [a for a in args[1:] if not a.startswith("-") and os.path.isfile(a)]
    if len(slides) == 1:
        return os.path.join(out, Path(slides[0]).stem, ".work")
    return os.path.join(out, "<slide>", ".work")


def resume_command(args: list[str], program: str | None = None) -> tuple[str, str] | None:
    """(what a stopped run keeps, the exact command that continues it); None for commands that
    cannot resume."""
    command = next((a for a in args if not a.startswith("-")), "")
    if command not in SAVED_ON_INTERRUPT:
        return None
    program = program or invoked_as()
    if "--overwrite" in args and command in ("segment", "demo"):
        # an --overwrite builds beside the old result: --resume would keep the OLD one
        kept = "the old result is untouched and the new one was not finished; run it again"
        return kept, f"{program} {shlex.join(args)}"
    again = [a for a in args if a != "--overwrite"]
    if "--resume" not in again:
        again.append("--resume")
    kept = SAVED_ON_INTERRUPT[command].format(where=_kept_where(command, args))
    return kept, f"{program} {shlex.join(again)}"


def interrupted_message(args: list[str]) -> str:
    """What Ctrl-C kept, and the exact command that continues from it."""
    hint = resume_command(args)
    if hint is None:
        return "omniseg: interrupted"
    return f"omniseg: interrupted; {hint[0]}; continue with:\n  {hint[1]}"


def disk_full_message(exc: BaseException, args: list[str]) -> str:
    """A full disk outside the atomic writers (a checkpoint, a tile spool): what was kept, and
    the command that continues once space is freed."""
    out = _out_value(args)
    where = getattr(exc, "filename", None) or (out if out != "OUT" else "an output")
    hint = resume_command(args)
    if hint is None:
        return f"omniseg: error: {where}: the disk is full; free space and rerun"
    return (
        f"omniseg: error: {where}: the disk is full; {hint[0]}; free space, then continue with:"
        f"\n  {hint[1]}"
    )


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:  # accepted anywhere on the line, not only before the subcommand
        args = ["--debug", *(a for a in args if a != "--debug")]
    import typer
    from typer._click.exceptions import UsageError  # typer vendors click (no public alias)

    from omniseg.cli.app import app

    _terminate_as_interrupt()
    try:  # not standalone: usage errors come here, to be said in one line like every other
        result = app(args=args, prog_name="omniseg", standalone_mode=False)
        if result == EXIT_INTERRUPTED:  # Typer turns Ctrl-C / SIGTERM into a silent 130
            _report_interrupt(args)
        return result if isinstance(result, int) else 0
    except UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "omniseg"
        message = " ".join(exc.format_message().split()) + _set_instead(exc, args)
        print(f"omniseg: error: {message} (see: {where} --help)", file=sys.stderr)
        return EXIT_USAGE
    except typer.Abort:  # Ctrl-C inside click's own handling
        _report_interrupt(args)
        return EXIT_INTERRUPTED
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if code == EXIT_INTERRUPTED:  # Typer turns Ctrl-C into a silent exit 130
            _report_interrupt(args)
        return code
    except OmnisegError as exc:
        if debug:
            traceback.print_exc()
        print(f"omniseg: error: {printable(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        _report_interrupt(args)
        return EXIT_INTERRUPTED
    except Exception as exc:
        from omniseg.atomic import is_disk_full

        if is_disk_full(exc):
            if debug:
                traceback.print_exc()
            print(disk_full_message(exc, args), file=sys.stderr)
            return EXIT_USAGE
        if debug:
            traceback.print_exc()
        print(
            f"omniseg: internal error: {type(exc).__name__}: {exc} (rerun with --debug for details)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


def _set_instead(exc, args: list[str]) -> str:
    """A train flag older versions had: say which --set key replaces it."""
    from omniseg.cli.train_cmd import SET_INSTEAD

    if not args or args[0 if args[0] != "--debug" else 1 :][:1] != ["train"]:
        return ""
    flag = next((a for a in args if a in SET_INSTEAD and a in exc.format_message()), None)
    if flag is None:
        return ""
    key = SET_INSTEAD[flag]
    return f"; train takes it as --set {key if '=' in key else key + '=VALUE'}"


def _report_interrupt(args: list[str]) -> None:
    """Print what was kept and the resume command as the last words of the run. An interrupt
    that lands while zarr waits on its I/O event loop leaves that task pending, and at exit
    asyncio would log 'Task was destroyed but it is pending!' after them: the interrupted I/O is
    expected here (resume redoes unfinished tiles), so that log is dropped."""
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    print(interrupted_message(args), file=sys.stderr)


def _terminate_as_interrupt() -> None:
    """SIGTERM (a cluster's scheduler, `kill`) stops like Ctrl-C: what is saved stays saved and
    the resume command is printed, instead of dying silently."""
    if threading.current_thread() is not threading.main_thread():
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


def run() -> None:
    sys.exit(main())
