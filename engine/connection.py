"""Builds redis-py clients the way the engine needs them."""
from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from .config import Settings, check_redis_url
from .errors import ConfigurationError, cluster_outage


class OutageAwareCluster(RedisCluster):
    """redis-py's cluster client, except that while it cannot read the cluster's layout
    (every node down, nodes disagreeing mid-failover, slots uncovered) its commands raise
    ``ClusterDownError`` rather than the bare ``RedisClusterException`` it also uses for
    misuse: callers that wait out a cluster outage (the worker) can tell the two apart."""

    def execute_command(self, *args, **kwargs):
        """As RedisCluster's, with the layout failures above raised as ClusterDownError."""
        try:
            return super().execute_command(*args, **kwargs)
        except RedisClusterException as exc:
            if isinstance(exc, redis.RedisError) or not cluster_outage(exc):
                raise
            raise redis.exceptions.ClusterDownError(
                "the cluster's layout cannot be read (a node down or a failover under way)") from exc


def connect(url: str, *, ssl_ca_certs: str | None = None, socket_timeout: float = 10.0,
            max_connections: int | None = None, cluster: bool = False) -> redis.Redis:
    """A client for ``url`` (``redis://``, ``rediss://``, ``unix://``); with ``cluster``, a
    Redis Cluster client that finds the other nodes from this one.

    RESP2 is asked for explicitly: redis-py 8 negotiates RESP3 by default and several reply
    shapes differ. The socket timeout sits above the longest blocking call we make (2 s
    slices), and retries are few and short: the worker does its own reconnecting with
    backoff, so the driver must not hide an outage behind a minute of silent retries.
    """
    kwargs: dict = dict(decode_responses=True, protocol=2, socket_timeout=socket_timeout,
                        socket_connect_timeout=5.0, health_check_interval=0,
                        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 1),
                        retry_on_error=[redis.ConnectionError])
    if max_connections:
        kwargs["max_connections"] = max_connections
    if ssl_ca_certs and url.startswith("rediss://"):
        kwargs["ssl_ca_certs"] = ssl_ca_certs
    try:
        if cluster:
            # Every key of a namespace shares one hash tag, so each script runs on one node.
            return OutageAwareCluster.from_url(url, **kwargs)
        return redis.Redis.from_url(url, **kwargs)
    except (ValueError, TypeError):
        # redis-py's message may quote a piece of the URL (a port that is really the start
        # of a password): name only the query options, which are never secret.
        check_redis_url(url)
        options = sorted(k for k, _ in parse_qsl(urlsplit(url).query)
                         if k.lower() != "password")
        raise ConfigurationError("REDIS_URL: redis-py cannot use it; check its query options ("
                                 + (", ".join(options) or "none") + ")") from None


def connect_settings(settings: Settings) -> redis.Redis:
    """A client for the connection the settings describe."""
    return connect(settings.connection_url(), ssl_ca_certs=settings.redis_ssl_ca_certs,
                   cluster=settings.redis_cluster)
