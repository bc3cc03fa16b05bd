"""The aggregation methods by the names the command line and the config use."""

from __future__ import annotations

from collections.abc import Callable

from lsun_crowd.aggregate import Posterior, Votes, majority_vote
from lsun_crowd.dawid_skene import dawid_skene, one_coin_dawid_skene
from lsun_crowd.glad import glad

Aggregator = Callable[[Votes], Posterior]
METHODS: dict[str, Aggregator] = {
    "majority": majority_vote,
    "dawid-skene": dawid_skene,
    "one-coin": one_coin_dawid_skene,
    "glad": glad,
}
DEFAULT_METHOD = "dawid-skene"
