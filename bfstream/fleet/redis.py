"""The fleet's one way to Redis: how a client is made, and how redis-py's errors become ours.

The broker, presence, leases and rate limits all talk to the same Redis; they share these two
things so that a dead server looks the same to each of them (``BrokerError``, 503
``broker_unavailable``) and no redis-py text, which names internal addresses, reaches a caller.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bfstream.errors import BrokerError

log = logging.getLogger("bfstream.redis")

MAX_CONNECTIONS = 64  # per pool; more callers at once wait for one
COMMAND_TIMEOUT = 2.0  # connect and command timeout: a dead server fails a request, not hangs it
UNREACHABLE = "The message broker (Redis) is unreachable"


def unreachable(error: BaseException | None) -> BrokerError:
    """The error callers see. redis-py's own text names internal addresses, so it goes to the log only."""
    log.debug("%s: %s", UNREACHABLE, error)
    return BrokerError(UNREACHABLE)


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """redis-py's errors stop here; above this edge only ``BrokerError`` is seen."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, OSError) as error:
        raise unreachable(error) from None
    except RedisError as error:
        log.warning("the message broker (Redis) refused a command: %s", error)
        raise BrokerError("The message broker (Redis) refused the command") from None


def redis_client(url: str, retries: int) -> Redis:
    """A client for commands. Its pool waits for a free connection (up to the command timeout)
    rather than failing at once: a burst of joins on one instance must queue, not see 503s.
    ``retries``: how often a command that failed on a dead connection is sent again on a new one;
    only for commands that are harmless twice."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=COMMAND_TIMEOUT,  # the wait for a free connection
        decode_responses=True,
        socket_connect_timeout=COMMAND_TIMEOUT,
        socket_timeout=COMMAND_TIMEOUT,
        retry=Retry(NoBackoff(), retries),
    )
    return Redis.from_pool(pool)  # closing the client closes its pool
