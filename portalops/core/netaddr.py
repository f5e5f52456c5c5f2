"""``host:port`` and ``host:port:address`` as configs and options write them, parsed once.

The port is the text after the last colon, so an IPv6 host keeps its colons; it is written in
brackets (``[::1]:9433``), which :func:`unbracket` takes off for socket calls and keeps for URLs.
"""

from __future__ import annotations


def parse_host_port(text: str) -> tuple[str, int] | None:
    """``"127.0.0.1:9433"`` -> ``("127.0.0.1", 9433)``; None without a colon or with a port
    that is not decimal digits. The host may be empty (``":9433"``); the port is not range
    checked (see :func:`is_port`)."""
    host, sep, port = text.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()):
        return None
    return host, int(port)


def is_port(number: int) -> bool:
    """A TCP port one can connect to or listen on: 1 to 65535."""
    return 0 < number < 65536


def unbracket(host: str) -> str:
    """``[::1]`` -> ``::1``: the host as the socket functions take it."""
    return host.strip("[]")


def parse_pin(text: str) -> tuple[str, int, str] | None:
    """A resolve pin ``host:port:address`` (curl's ``--resolve``) -> (host, port, address) as
    written; None unless all three are there and the port is decimal digits."""
    host, _, rest = text.partition(":")
    port, _, address = rest.partition(":")
    if not (host and port.isascii() and port.isdigit() and address):
        return None
    return host, int(port), address
