"""Deploy checks: PostgreSQL behind PgBouncer in transaction mode.

Under transaction pooling a client's next transaction may run on another server connection,
so a setting that keeps state on one (a prepared statement, a server-side cursor) breaks at
random under load rather than at once. These checks catch the set-ups that look like that.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks

PGBOUNCER_PORT = 6432  # PgBouncer's default port: a DATABASE_URL on it is most likely PgBouncer


@checks.register(deploy=True)
def check_database_pooler(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    return pooler_warnings(settings.DATABASES["default"], settings.DATABASE_POOLER)


def pooler_warnings(database: dict[str, Any], pooler: str) -> list[checks.CheckMessage]:
    """What looks wrong in the default database's settings given DATABASE_POOLER."""
    if database["ENGINE"] != "django.db.backends.postgresql":
        if pooler:
            return [
                checks.Warning(
                    "DATABASE_POOLER is set but the database is not PostgreSQL.",
                    hint="Unset DATABASE_POOLER, or point DATABASE_URL at PostgreSQL through PgBouncer.",
                    id="dosportal.W101",
                )
            ]
        return []
    warnings = []
    if not pooler and str(database.get("PORT") or "") == str(PGBOUNCER_PORT):
        warnings.append(
            checks.Warning(
                f"DATABASE_URL uses port {PGBOUNCER_PORT}, PgBouncer's, but DATABASE_POOLER is not set.",
                hint=(
                    "Behind PgBouncer in transaction mode set DATABASE_POOLER=pgbouncer (no prepared "
                    "statements on /v1, no server-side cursors); if this is PostgreSQL itself, ignore this."
                ),
                id="dosportal.W102",
            )
        )
    if pooler == "pgbouncer":
        options = database.get("OPTIONS", {})
        if not database.get("DISABLE_SERVER_SIDE_CURSORS"):
            warnings.append(
                checks.Warning(
                    "DATABASE_POOLER=pgbouncer but server-side cursors are enabled.",
                    hint="Set DATABASES['default']['DISABLE_SERVER_SIDE_CURSORS'] = True: a cursor does "
                    "not outlive its transaction under transaction pooling.",
                    id="dosportal.W103",
                )
            )
        if options.get("server_side_binding") or options.get("prepare_threshold") is not None:
            warnings.append(
                checks.Warning(
                    "DATABASE_POOLER=pgbouncer but the database OPTIONS turn on server-side binding or "
                    "prepared statements.",
                    hint="Remove 'server_side_binding' and 'prepare_threshold' from OPTIONS: a prepared "
                    "statement lives on one server connection, and the next transaction may get another.",
                    id="dosportal.W104",
                )
            )
    return warnings
