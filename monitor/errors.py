"""The one exception type the command line turns into a one-line message."""


class MonitorError(Exception):
    """A problem with an input (audio, phrasebook, model, option) that the user can fix.

    The message always names the input. The CLI prints it on one line, without a
    traceback unless ``--debug`` is given.
    """
