"""The one exception type the command line turns into a one-line message."""


class MonitorError(Exception):
    """A problem with an input (audio, phrasebook, model, option) that the user can fix.

    The message always names the input. The CLI prints it on one line, without a
    traceback unless ``--debug`` is given.
    """


class UsageError(MonitorError):
    """The command was called wrongly (an option's value, a manifest's format, an unknown name).

    The command line exits with code 2 for it, as for argparse's own usage errors,
    and 1 for every other ``MonitorError``.
    """
