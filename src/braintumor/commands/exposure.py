"""Warn before a server without authentication is published beyond this machine (``app`` and ``serve``)."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:  # a host name (other than localhost) may resolve to anything
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def exposure_warning(host: str, command: str = "app", what: str = "page") -> str | None:
    """The warning ``braintumor <command>`` prints for a host that publishes its ``what`` beyond this machine,
    else None."""
    if is_loopback(host):
        return None
    return (
        f"braintumor {command}: warning: --host {host or '(all interfaces)'} is not a loopback address. The "
        f"{what} has no authentication and no TLS: anyone who can reach this address can upload files and see "
        "results. Put it behind a reverse proxy with authentication and TLS."
    )
