"""MONGO_URL as PyMongo reads it, checked once at start-up without any I/O, and the options
the service refuses because they would break what it promises.

Three readings, all PyMongo's own, none connecting or resolving anything:
- the options, strictly: PyMongo's client only warns about an unknown option or a bad value
  and carries on without it, so a typo would pass unseen. `parse_uri` refuses them; for
  `mongodb+srv://` it would also look up the SRV and TXT records (pymongo 4.20 has no flag
  to skip that), so a DNS outage at start-up would read as a bad setting: there only the
  options are read, with `split_options`, the same parser's public part;
- the URL as a client would take it: `MongoClient(url, connect=False)` parses it as every
  worker's client will, refuses options that contradict each other (`maxStalenessSeconds`
  with a primary read) and TLS files it cannot load, and does no I/O (no connection, no
  DNS) before it is closed;
- the service's own refusals, below.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pymongo import MongoClient
from pymongo.errors import PyMongoError
from pymongo.uri_parser import parse_uri, split_options

SRV_SCHEME = "mongodb+srv://"
# Every read goes to the primary and every write is acknowledged: what a client was told
# (201 with an ETag, an idempotency key's stored answer) the next read sees.
_PRIMARY_ONLY = (
    "the service reads from the primary only, so that no read misses a write it acknowledged "
    "(ETags, idempotency keys); remove it"
)


class RefusedOption(ValueError):
    """An option PyMongo accepts and the service does not; the message says why."""


def check_mongo_url(url: str) -> None:
    """Raise ValueError saying why PyMongo cannot use `url` (RefusedOption: why the service
    will not), in words that never quote the URL, so never its password."""
    try:
        options = _strict_options(url)
        _refuse(options)
        MongoClient(url, connect=False).close()
    except RefusedOption:
        raise
    # InvalidURI and ConfigurationError, or ValueError for a bad host or port: PyMongo's
    # messages name no credential text (tests/test_mongo_url.py holds it to that).
    except (PyMongoError, ValueError) as error:
        raise ValueError(str(error)) from None
    except OSError as error:  # ssl.SSLError included
        raise ValueError(f"the TLS files it names cannot be used ({error})") from None


def _strict_options(url: str) -> Mapping[str, Any]:
    if url.startswith(SRV_SCHEME):
        query = url.partition("?")[2]
        return split_options(query) if query else {}
    options: Mapping[str, Any] = parse_uri(url)["options"]
    return options


def _refuse(options: Mapping[str, Any]) -> None:
    """The options as PyMongo read them (camelCase names, any case accepted in the URL)."""
    mode = options.get("readPreference", "primary")
    if mode != "primary":
        raise RefusedOption(f"readPreference={mode} is refused: {_PRIMARY_ONLY}")
    if any(options.get("readPreferenceTags") or ()):
        raise RefusedOption(
            f"readPreferenceTags is refused: tags choose secondaries; {_PRIMARY_ONLY}"
        )
    if options.get("w") == 0:
        raise RefusedOption(
            "w=0 is refused: unacknowledged, a write that fails (a duplicate email or "
            "idempotency key included) would still be answered as done; leave w unset, or "
            "w=majority with a replica set"
        )
    if options.get("journal") is False:
        raise RefusedOption(
            "journal=false is refused: with it an acknowledged write can be lost when the "
            "server crashes before its journal is written; leave journal unset (w=majority "
            "then waits for the journal on a majority, by default)"
        )
