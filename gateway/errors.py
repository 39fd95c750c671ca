"""Errors of the running node.

GatewayError → ConfigError (fix the config), TransientError (retry later: PACS down, timeout,
0xA7xx). InputError (never retry) is the mapping's own, re-exported here so callers catch one name.
"""

from __future__ import annotations

from dicom_mapping.errors import InputError

__all__ = ["ConfigError", "DeliveryError", "GatewayError", "InputError", "TransientError", "Unavailable"]


class GatewayError(Exception):
    """Base of the node's own errors."""


class ConfigError(GatewayError):
    """The configuration (or a command-line address or key file) is unusable."""


class TransientError(GatewayError):
    """Try again later: the PACS is unreachable, timed out or out of resources."""


class DeliveryError(GatewayError):
    """The PACS refused the object for good (0xCxxx, 0xA9xx): quarantine, do not retry."""


class Unavailable(TransientError):
    """The node cannot take a photo now (journal lost or failing, worklist unreachable): a door
    answers "try later" (HTTP 503, DICOM 0xA700, the folder leaves the file in place), never success
    and never a refusal."""
