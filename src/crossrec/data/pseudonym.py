"""Privacy at the door: user ids replaced by a keyed hash before anything is written.

With `prepare.pseudonymise: true`, every raw user id is replaced by
`HMAC-SHA256(key, raw id)` (32 hex digits, 128 bits) before the Bundle is built, so the Bundle,
every artifact trained on it (ids.json), the serving store and the update versions carry only
pseudonyms. The key comes from the environment variable `CROSSREC_PSEUDONYM_KEY` (at least 16
characters) and is never stored; the manifest keeps only a check value (an HMAC of a fixed label
under the key) that tells a wrong key from the right one. Whoever holds the key maps a raw id to its
pseudonym (`Bundle.user_key`, which recommend, serve and update call); without it the pseudonyms
cannot be linked back to raw ids. Items are not pseudonymised: they are the catalogue.

Example:
    >>> pseudonym("alice", b"0123456789abcdef")
    'fdbf8b1cacd3d578e062d0e41104357d'
"""

from __future__ import annotations

import hashlib
import hmac
import os

import polars as pl

from crossrec.errors import ConfigError

KEY_ENV = "CROSSREC_PSEUDONYM_KEY"
MIN_KEY = 16
_CHECK_LABEL = b"crossrec pseudonym key check"


class PseudonymKeyError(ConfigError):
    """The pseudonymisation key is missing, too short, or not the one a Bundle was prepared with."""


def key_from_env() -> bytes:
    """The key from `CROSSREC_PSEUDONYM_KEY`; PseudonymKeyError when unset or short."""
    key = os.environ.get(KEY_ENV, "")
    if not key:
        raise PseudonymKeyError(
            f"prepare.pseudonymise: set the environment variable {KEY_ENV} to a secret key "
            f"(at least {MIN_KEY} characters); it is never stored"
        )
    if len(key) < MIN_KEY:
        raise PseudonymKeyError(f"{KEY_ENV} is {len(key)} characters; use at least {MIN_KEY}")
    return key.encode()


def pseudonym(raw: str, key: bytes) -> str:
    """The pseudonym of one raw user id."""
    return hmac.new(key, str(raw).encode(), hashlib.sha256).hexdigest()[:32]


def key_check(key: bytes) -> str:
    """What the manifest stores to recognise the key (reveals nothing about it)."""
    return hmac.new(key, _CHECK_LABEL, hashlib.sha256).hexdigest()[:16]


def pseudonymise_users(df: pl.DataFrame, key: bytes) -> pl.DataFrame:
    """`df` with its `user` column replaced by pseudonyms (one HMAC per distinct user)."""
    users = df["user"].cast(pl.Utf8).unique()
    mapping = pl.DataFrame({"user": users, "_pseudonym": [pseudonym(u, key) for u in users.to_list()]})
    return (
        df.with_columns(pl.col("user").cast(pl.Utf8))
        .join(mapping, on="user", how="left", maintain_order="left")
        .drop("user")
        .rename({"_pseudonym": "user"})
        .select(df.columns)
    )


def manifest_entry(key: bytes) -> dict[str, str]:
    return {"method": "hmac-sha256/128", "key_env": KEY_ENV, "key_check": key_check(key)}


def checked_key(entry: dict[str, str]) -> bytes:
    """The environment's key, checked against a Bundle's manifest entry."""
    key = key_from_env()
    if not hmac.compare_digest(key_check(key), str(entry.get("key_check", ""))):
        raise PseudonymKeyError(f"{KEY_ENV} is not the key this Bundle was pseudonymised with")
    return key


__all__ = [
    "KEY_ENV",
    "PseudonymKeyError",
    "checked_key",
    "key_check",
    "key_from_env",
    "manifest_entry",
    "pseudonym",
    "pseudonymise_users",
]
