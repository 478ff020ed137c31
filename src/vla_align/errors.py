"""User-facing errors.

Anything a user can cause (a bad path, a bad config key, a malformed dataset) raises
:class:`UserError`. The CLI prints its message on one line and exits with code 2; library
callers catch it like any other exception.
"""

from __future__ import annotations


class UserError(Exception):
    """An error caused by input the user controls; the message says what to do."""


class DatasetError(UserError):
    """A dataset on disk is missing, incomplete or malformed."""


class ConfigError(UserError):
    """A configuration value or key is invalid."""
