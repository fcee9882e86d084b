"""dosportal.redisclient: how the Redis settings are read, and what pools they give."""

from __future__ import annotations

import pytest
import redis
import redis.asyncio.sentinel as asentinel
import redis.sentinel
from django.core.exceptions import ImproperlyConfigured

from dosportal import redisclient
from dosportal.checks.redis import tls_warnings
from dosportal.tests.test_settings import print_settings, run_django

BASE = {"DEBUG": "1", "DOS_AI_ALLOW_DEV_MODEL": "1"}


def test_sentinels_are_host_port_pairs():
    assert redisclient.parse_sentinels(["10.0.0.1:26379", "[::1]:26380"]) == [("10.0.0.1", 26379), ("::1", 26380)]
    for wrong in ("10.0.0.1", "10.0.0.1:port", ":26379", "host:70000"):
        with pytest.raises(ImproperlyConfigured, match="REDIS_SENTINELS entries must be host:port"):
            redisclient.parse_sentinels([wrong])


def test_sentinels_without_a_master_name_or_a_url_of_another_scheme_stop_the_start():
    no_master = run_django({**BASE, "REDIS_SENTINELS": "127.0.0.1:26379"}, "check")
    http = run_django({**BASE, "REDIS_URL": "http://127.0.0.1:6379"}, "check")

    assert no_master.returncode == 1
    assert "REDIS_SENTINELS is set: REDIS_SENTINEL_MASTER must name the primary" in no_master.stderr
    assert http.returncode == 1
    assert "REDIS_URL must start with redis://, rediss:// or unix://" in http.stderr


def test_sentinels_alone_give_a_redis_cache_and_no_process_local_ratelimit_exception():
    values = print_settings(
        {**BASE, "REDIS_SENTINELS": "127.0.0.1:26379", "REDIS_SENTINEL_MASTER": "dosportal"},
        "CACHES",
        "SILENCED_SYSTEM_CHECKS",
        "REDIS_CONFIGURED",
    )

    assert values["CACHES"]["default"]["BACKEND"] == "dosportal.cache.FailOpenRedisCache"
    assert values["SILENCED_SYSTEM_CHECKS"] == ["django_ratelimit.W001"]
    assert values["REDIS_CONFIGURED"] is True


def test_a_tls_url_uses_the_ca_file(settings, tmp_path):
    settings.REDIS_URL, settings.REDIS_CA_FILE, settings.REDIS_SENTINELS = "rediss://h:6380/2", str(tmp_path), []

    pool = redisclient.sync_pool(settings.REDIS_URL)

    assert pool.connection_class is redis.SSLConnection
    assert (pool.connection_kwargs["ssl_ca_certs"], pool.connection_kwargs["db"]) == (str(tmp_path), 2)


def test_with_sentinels_the_url_gives_only_database_password_and_tls(settings, tmp_path):
    settings.REDIS_SENTINELS, settings.REDIS_SENTINEL_MASTER = ["127.0.0.1:1"], "dosportal"
    settings.REDIS_URL, settings.REDIS_CA_FILE = "rediss://:s%40cret@ignored:1/3", str(tmp_path)

    sync = redisclient.sync_pool(settings.REDIS_URL)
    limiter = redisclient.async_client(
        settings.REDIS_URL, max_connections=5, socket_timeout=1.0, socket_connect_timeout=1.0
    ).connection_pool

    assert isinstance(sync, redis.sentinel.SentinelConnectionPool)
    assert isinstance(limiter, asentinel.SentinelConnectionPool)
    assert limiter.max_connections == 5 and limiter.timeout is None  # a burst waits, never fails open
    for pool in (sync, limiter):
        assert pool.service_name == "dosportal"
        kwargs = pool.connection_kwargs
        assert (kwargs["db"], kwargs["password"], kwargs["ssl_ca_certs"]) == (3, "s@cret", str(tmp_path))
        assert "host" not in kwargs


def test_the_deploy_check_warns_of_a_ca_file_without_tls_or_missing(tmp_path):
    ca_file = tmp_path / "ca.crt"
    ca_file.write_text("-----BEGIN CERTIFICATE-----\n")

    assert [m.id for m in tls_warnings("redis://h:6379/0", str(ca_file))] == ["dosportal.W201"]
    assert [m.id for m in tls_warnings("rediss://h:6380/0", str(tmp_path / "missing"))] == ["dosportal.W202"]
    assert tls_warnings("rediss://h:6380/0", str(ca_file)) == []
    assert tls_warnings("redis://h:6379/0", "") == []
