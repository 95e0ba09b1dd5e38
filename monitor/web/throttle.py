"""Slowing down password and token guessing.

Failed log-ins are counted in a sliding time window under three keys, each with
its own limit: the (account, client address) pair, the client address alone
and the account alone. When any count is at its limit, the next attempt is
refused with 429 and ``Retry-After`` (the seconds until the oldest counted
failure leaves the window) before the password is even checked, and refused
attempts are not counted, so waiting always helps.

Why three: the pair limit is the tight one (a user who mistypes is slowed
down, and one address hammering one account stops after a few guesses); the
address limit stops one address cycling through names; the looser account
limit stops many addresses sharing the work on one account. An attacker on
one address therefore never locks the real user out: their refused attempts
stop counting against the account once the pair limit is reached. Only an
attacker spreading guesses over several addresses can exhaust the account
limit, and then the real user waits at most one window too; that is the price
of bounding how many guesses any account can get.

Memory is bounded: each key set is a least-recently-failed LRU of at most
``max_keys`` keys holding at most ``limit`` timestamps each, so cycling names
or addresses only pushes the oldest keys out.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass


@dataclass
class ThrottleOptions:
    """How many failed attempts are allowed within a window."""

    window_s: float = 900.0
    """The sliding window, in seconds: a failure counts for this long."""
    per_account_address: int = 5
    """Failed log-ins allowed for one account from one client address."""
    per_address: int = 20
    """Failed log-ins allowed from one client address, whatever the account names."""
    per_account: int = 30
    """Failed log-ins allowed for one account, whatever the addresses."""
    per_address_tokens: int = 20
    """Wrong API tokens allowed from one client address."""
    max_keys: int = 10_000
    """Keys remembered per limit; the least recently failing ones are forgotten first."""


class FailureWindow:
    """Failure times per key within a sliding window, for a bounded number of keys."""

    def __init__(self, limit: int, window_s: float, max_keys: int, clock: Callable[[], float] = time.monotonic):
        self.limit, self.window_s, self.max_keys, self.clock = limit, window_s, max_keys, clock
        self._failures: OrderedDict[Hashable, deque[float]] = OrderedDict()
        self._lock = threading.Lock()  # sync routes run in a thread pool

    def retry_after(self, key: Hashable) -> float:
        """Seconds until ``key`` may try again; 0 when it may now."""
        with self._lock:
            times = self._failures.get(key)
            if not times:
                return 0.0
            now = self.clock()
            while times and times[0] <= now - self.window_s:
                times.popleft()
            if not times:
                del self._failures[key]
                return 0.0
            return times[0] + self.window_s - now if len(times) >= self.limit else 0.0

    def fail(self, key: Hashable) -> None:
        with self._lock:
            times = self._failures.pop(key, None) or deque(maxlen=self.limit)
            times.append(self.clock())
            self._failures[key] = times  # now the most recent key
            while len(self._failures) > self.max_keys:
                self._failures.popitem(last=False)

    def clear(self, key: Hashable) -> None:
        with self._lock:
            self._failures.pop(key, None)

    def __len__(self) -> int:
        return len(self._failures)


class LoginThrottle:
    """The three login limits of the module docstring, and one for API tokens per address."""

    def __init__(self, options: ThrottleOptions, clock: Callable[[], float] = time.monotonic):
        def window(limit: int) -> FailureWindow:
            return FailureWindow(limit, options.window_s, options.max_keys, clock)

        self.pairs = window(options.per_account_address)
        self.addresses = window(options.per_address)
        self.accounts = window(options.per_account)
        self.tokens = window(options.per_address_tokens)

    def login_wait(self, account: str, address: str) -> int:
        """Whole seconds before this account may be tried from this address; 0 when it may now."""
        account = account[:255]  # no account name is longer; a huge form field must not become a huge key
        return _seconds(max(self.pairs.retry_after((account, address)), self.addresses.retry_after(address),
                            self.accounts.retry_after(account)))

    def login_failed(self, account: str, address: str) -> None:
        account = account[:255]
        self.pairs.fail((account, address))
        self.addresses.fail(address)
        self.accounts.fail(account)

    def login_succeeded(self, account: str, address: str) -> None:
        """The right password: this address's mistakes on this account are forgiven (the others stay)."""
        self.pairs.clear((account[:255], address))

    def token_wait(self, address: str) -> int:
        return _seconds(self.tokens.retry_after(address))

    def token_failed(self, address: str) -> None:
        self.tokens.fail(address)


def _seconds(wait: float) -> int:
    return math.ceil(wait) if wait > 0 else 0
