"""User-facing errors: the CLI prints them as one line and exits with code 2."""


class ApoError(Exception):
    """Bad input or configuration. The message is one line naming the file/row/field/setting."""

    exit_code = 2
