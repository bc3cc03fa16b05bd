"""The MTurk adapter passes the conformance suite every adapter passes, on the Stubber-backed fake."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path, PurePosixPath

from fake_turk import FakeTurk, truthful
from lsun_crowd_mturk import Api, MTurkCrowd, MTurkSettings

from lsun_crowd.crowd import CrowdBackend
from lsun_crowd.fees import bonus_fee
from lsun_crowd.testing import CrowdBackendConformance, conformance_truth

SETTINGS = MTurkSettings(image_root="/conformance", image_url_prefix="https://images.example.org/conformance")
WORKERS = ("A1HONEST", "A2HONEST", "A3HONEST", "A4CONTRARY")


def answer(worker: str, url: str) -> str:
    honest = truthful(lambda image: conformance_truth(PurePosixPath(image).name, ""))(worker, url)
    return honest if "HONEST" in worker else ("no" if honest == "yes" else "yes")


def choose(worker: str, url: str, category: str) -> bool:
    shows = conformance_truth(PurePosixPath(url).name, category)
    return shows if "HONEST" in worker else not shows


class TestMTurkConformance(CrowdBackendConformance):
    def make_backend(self, tmp_path: Path) -> CrowdBackend:
        self.turk = FakeTurk()
        return MTurkCrowd(Api(self.turk.client, SETTINGS, sleep=lambda _: None), SETTINGS, "conformance")

    def complete_work(self, backend: CrowdBackend, hit_ids: Sequence[str]) -> None:
        for hit_id in hit_ids:
            for worker in WORKERS:
                self.turk.work(hit_id, worker, answer, choose=choose)
        # Whatever no qualified worker took runs out: MTurk expires it at the end of its lifetime.
        self.turk.now += __import__("datetime").timedelta(days=30)
        super().complete_work(backend, hit_ids)

    def bonuses_paid(self, backend: CrowdBackend, worker_id: str) -> list[Decimal]:
        # MTurk keeps no list of bonuses a requester can read back: the fake's SendBonus calls for
        # the worker, counted once per token it accepted, are what MTurk paid.
        tokens = {
            params["UniqueRequestToken"]
            for operation, params in self.turk.calls
            if operation == "SendBonus" and params["WorkerId"] == worker_id
        }
        return [self.turk.bonuses[token] for token in sorted(tokens) if token in self.turk.bonuses]

    def bonus_charge(self, amount: Decimal) -> Decimal:
        return amount + bonus_fee(amount)  # MTurk takes its fee from the balance with the bonus
