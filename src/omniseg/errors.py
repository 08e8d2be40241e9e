"""The single user-facing error type: its message names the file and the fix."""


class OmnisegError(Exception):
    """A bad input or configuration. The CLI prints only the message (traceback with --debug)."""


def printable(text: str) -> str:
    """``text`` safe for a terminal: control characters (escape sequences from a file's class
    names or paths) are shown escaped, never executed."""
    return "".join(
        c if c in "\n\t" or not (ord(c) < 32 or 127 <= ord(c) < 160) else repr(c)[1:-1]
        for c in str(text)
    )
