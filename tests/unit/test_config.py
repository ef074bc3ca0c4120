"""Settings: a flag wins over its SETTLEMENT_* variable, which wins over the default."""

from __future__ import annotations

import pytest

from settlement import config


def test_numbers_come_from_the_flag_then_the_variable_then_the_default() -> None:
    env = {"SETTLEMENT_PING_INTERVAL": "3", "SETTLEMENT_DB_POOL_SIZE": "4"}
    s = config.parse(["--db-pool-size", "7"], env=env)
    assert s.db_pool_size == 7  # the flag
    assert s.ping_interval == 3.0  # the variable
    assert s.ping_timeout == config.Settings().ping_timeout  # the default
    assert (s.guess_burst, s.guess_rate) == (100, 20.0)


def test_a_heartbeat_must_be_positive() -> None:
    with pytest.raises(SystemExit):
        config.parse(["--ping-interval", "0"], env={})


def test_a_number_that_is_not_one_is_refused() -> None:
    with pytest.raises(SystemExit):
        config.parse(["--guess-rate", "fast"], env={})
    with pytest.raises(ValueError):
        config.parse([], env={"SETTLEMENT_GUESS_BURST": "many"})
