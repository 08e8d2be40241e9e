"""The single user-facing error type: its message names the file and the fix."""


class OmnisegError(Exception):
    """A bad input or configuration. The CLI prints only the message (traceback with --debug)."""
