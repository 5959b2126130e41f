"""Stored API keys (MongoDB ``api_keys``): a name, scopes, expiry, last use, optional quotas, and the SHA-256 of the
secret; the secret itself is shown once, when the key is created or rotated.

    python -m config.keys create --name alice --scopes inference,jobs,rag [--expires-in-days N]
        [--tokens-per-day N] [--concurrent-streams N] [--queued-jobs N]
    python -m config.keys list | revoke NAME | rotate NAME
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import hmac
import secrets
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import mongoengine as me

from config import audit
from config.mongo import connect
from config.settings import Settings

SCOPES = ("admin", "inference", "jobs", "rag", "batches", "read")
"""The same scopes as ``web.identity.SCOPES`` (the web layer's name for them; config cannot import web)."""
SECRET_PREFIX = "mlxf-"
QUOTAS = ("tokens_per_day", "concurrent_streams", "queued_jobs")


class KeyChangeError(ValueError):
    """A key change that cannot be made (unknown key, taken name, bad scope): its message says why."""


class ApiKey(me.Document):
    key_id = me.StringField(primary_key=True)
    name = me.StringField(required=True, unique=True)
    secret_hash = me.StringField(required=True, unique=True)
    scopes = me.ListField(me.StringField(choices=SCOPES))
    created_at = me.DateTimeField(required=True)
    expires_at = me.DateTimeField()
    last_used_at = me.DateTimeField()
    revoked_at = me.DateTimeField()
    tokens_per_day = me.IntField(min_value=1)
    concurrent_streams = me.IntField(min_value=1)
    queued_jobs = me.IntField(min_value=1)

    meta = {"collection": "api_keys", "indexes": ["revoked_at"]}


@dataclass(frozen=True)
class KeyRecord:
    """What a web process keeps of a stored key while it caches it (the secret's hash, never the secret)."""

    key_id: str
    name: str
    scopes: frozenset[str]
    created_at: datetime
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None
    quotas: dict[str, int] = field(default_factory=dict)
    secret_hash: str = field(default="", repr=False)

    def state(self, now: datetime) -> str:
        """``active``, ``revoked`` or ``expired`` at ``now``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and _aware(self.expires_at) <= now:
            return "expired"
        return "active"

    def public(self, now: datetime) -> dict[str, Any]:
        """The key as the CLI and ``/admin/keys`` show it."""
        return {
            "id": self.key_id,
            "name": self.name,
            "scopes": sorted(self.scopes),
            "state": self.state(now),
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "last_used_at": self.last_used_at,
            "revoked_at": self.revoked_at,
            "quotas": dict(self.quotas),
        }


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """SHA-256, unsalted: secrets are 32 random bytes, so no dictionary or rainbow table reaches them."""
    return hashlib.sha256(secret.encode()).hexdigest()


def same_hash(given: str, stored: str) -> bool:
    return hmac.compare_digest(given.encode(), stored.encode())


def parse_scopes(text: str | list[str]) -> list[str]:
    names = [part.strip() for part in (text.split(",") if isinstance(text, str) else text) if part.strip()]
    unknown = sorted(set(names) - set(SCOPES))
    if unknown or not names:
        raise KeyChangeError(f"scopes must be some of {', '.join(SCOPES)} (got {', '.join(unknown) or 'none'})")
    return sorted(set(names))


def record(key: ApiKey) -> KeyRecord:
    return KeyRecord(
        key_id=key.key_id,
        name=key.name,
        scopes=frozenset(key.scopes),
        created_at=_aware(key.created_at),
        expires_at=_aware(key.expires_at) if key.expires_at else None,
        last_used_at=_aware(key.last_used_at) if key.last_used_at else None,
        revoked_at=_aware(key.revoked_at) if key.revoked_at else None,
        quotas={name: getattr(key, name) for name in QUOTAS if getattr(key, name)},
        secret_hash=key.secret_hash,
    )


def find(name_or_id: str) -> ApiKey:
    key = ApiKey.objects(key_id=name_or_id).first() or ApiKey.objects(name=name_or_id).first()
    if key is None:
        raise KeyChangeError(f"no key is named '{name_or_id}' or has that id")
    return key


def by_secret(secret: str) -> KeyRecord | None:
    key = ApiKey.objects(secret_hash=hash_secret(secret)).first()
    return record(key) if key is not None else None


def any_active(now: datetime | None = None) -> bool:
    """Whether a key that is neither revoked nor expired is stored: the API then needs keys."""
    now = now or datetime.now(UTC)
    unexpired = me.Q(expires_at=None) | me.Q(expires_at__gt=now)
    return ApiKey.objects(me.Q(revoked_at=None) & unexpired).first() is not None


def all_keys() -> list[KeyRecord]:
    return [record(key) for key in ApiKey.objects.order_by("created_at")]


def names_by_id() -> dict[str, str]:
    return {key.key_id: key.name for key in ApiKey.objects.only("key_id", "name")}


def create(
    name: str,
    scopes: str | list[str],
    expires_in_days: float | None = None,
    quotas: dict[str, int | None] | None = None,
) -> tuple[KeyRecord, str]:
    """A new key and its secret (shown this once)."""
    if not name or len(name) > 64 or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise KeyChangeError("a key's name is 1 to 64 letters, digits, '-', '_' or '.'")
    if ApiKey.objects(name=name).first() is not None:
        raise KeyChangeError(f"a key named '{name}' exists already")
    now = datetime.now(UTC)
    secret = new_secret()
    key = ApiKey(
        key_id="key_" + secrets.token_hex(12),
        name=name,
        secret_hash=hash_secret(secret),
        scopes=parse_scopes(scopes),
        created_at=now,
        expires_at=now + timedelta(days=expires_in_days) if expires_in_days else None,
        **{quota: value for quota, value in (quotas or {}).items() if quota in QUOTAS and value},
    )
    key.save(force_insert=True)
    return record(key), secret


def revoke(name_or_id: str) -> KeyRecord:
    key = find(name_or_id)
    if key.revoked_at is None:
        key.revoked_at = datetime.now(UTC)
        key.save()
    return record(key)


def rotate(name_or_id: str) -> tuple[KeyRecord, str]:
    """A new secret for the same key id (so the objects it owns stay its own); the old secret stops working."""
    key = find(name_or_id)
    if key.revoked_at is not None:
        raise KeyChangeError(f"the key '{key.name}' is revoked; create another")
    secret = new_secret()
    key.secret_hash = hash_secret(secret)
    key.save()
    return record(key), secret


def touch(key_id: str, moment: datetime) -> None:
    ApiKey.objects(key_id=key_id).update_one(set__last_used_at=moment)


def _print_key(key: KeyRecord, secret: str | None = None) -> None:
    public = key.public(datetime.now(UTC))
    when = {name: public[name].isoformat(timespec="seconds") if public[name] else "-" for name in ("expires_at",)}
    quotas = ",".join(f"{name}={value}" for name, value in key.quotas.items()) or "-"
    print(f"{key.name}\t{key.key_id}\t{','.join(public['scopes'])}\t{public['state']}\texpires {when['expires_at']}")
    if quotas != "-":
        print(f"  quotas: {quotas}")
    if secret:
        print(f"  secret (shown once, store it now): {secret}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m config.keys", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    made = commands.add_parser("create", help="create a key and print its secret once")
    made.add_argument("--name", required=True)
    made.add_argument("--scopes", required=True, help=f"comma-separated: {', '.join(SCOPES)}")
    made.add_argument("--expires-in-days", type=float)
    for quota in QUOTAS:
        made.add_argument(f"--{quota.replace('_', '-')}", type=int, dest=quota)
    commands.add_parser("list", help="every key, without secrets")
    for command in ("revoke", "rotate"):
        commands.add_parser(command, help=f"{command} a key by name or id").add_argument("name")
    return parser


def main(argv: list[str] | None = None, settings: Settings | None = None) -> int:
    args = _parser().parse_args(argv)
    connect(settings or Settings.from_env())
    actor = f"cli:{getpass.getuser()}"
    try:
        if args.command == "list":
            for key in all_keys():
                _print_key(key)
            return 0
        if args.command == "create":
            quotas = {quota: getattr(args, quota) for quota in QUOTAS}
            key, secret = create(args.name, args.scopes, args.expires_in_days, quotas)
            audit.record(actor, None, "keys.create", key.name, "cli", 201)
            _print_key(key, secret)
        elif args.command == "revoke":
            key = revoke(args.name)
            audit.record(actor, None, "keys.revoke", key.name, "cli", 200)
            _print_key(key)
        else:
            key, secret = rotate(args.name)
            audit.record(actor, None, "keys.rotate", key.name, "cli", 200)
            _print_key(key, secret)
    except KeyChangeError as exc:
        audit.record(actor, None, f"keys.{args.command}", getattr(args, "name", None), "cli", 400)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
