"""Helpers for tests that interrupt a child process."""

from __future__ import annotations

import signal


def default_sigint() -> None:
    """``preexec_fn`` giving the child Ctrl-C's default action, as a terminal would.

    A background job of a non-interactive shell (as CI may start the suite)
    starts with SIGINT ignored, the child inherits that, and Python then
    installs no KeyboardInterrupt handler: the Ctrl-C under test would be lost.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
