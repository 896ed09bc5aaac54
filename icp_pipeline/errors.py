"""User-facing errors: their message is the one line `icp run` prints, so it names the file, column or rule."""

from __future__ import annotations


class IcpError(Exception):
    """Base of errors whose message is meant for the person running the pipeline."""


class IcpConfigError(IcpError):
    """`icp.yaml` or a data contract is malformed."""


class IcpInputError(IcpError):
    """The source data cannot be read: missing file, missing required column, unreadable file."""


class IcpContractError(IcpError):
    """A blocking data-contract rule failed; the nightly run stops."""
