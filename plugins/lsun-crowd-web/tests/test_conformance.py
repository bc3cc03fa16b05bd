"""The web crowd passes the conformance suite; annotators work through the shared queue."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

from lsun_crowd_web import WebCrowd, WebState

from lsun_crowd.crowd import NO, YES, CrowdBackend, encode_choices
from lsun_crowd.testing import CrowdBackendConformance, conformance_labels, conformance_truth

ANNOTATORS = ("ana", "ben", "cho")


class TestWebConformance(CrowdBackendConformance):
    def make_backend(self, tmp_path: Path) -> CrowdBackend:
        self.state = WebState(tmp_path / "web-crowd.sqlite")
        for name in ANNOTATORS:
            self.state.add_annotator(name)
        return WebCrowd(self.state)

    def complete_work(self, backend: CrowdBackend, hit_ids: Sequence[str]) -> None:
        for name in ANNOTATORS:
            test = self.state.pending_test(name)
            if test is not None:
                self.state.grade(name, test, {i.item_key: self.answer(i.uri) for i in test.items})
            while (hit := self.state.next_hit(name)) is not None:
                if hit.categories:  # a multi-label HIT: the categories the image shows
                    answers = {i.item_key: encode_choices(conformance_labels(i.uri)) for i in hit.items}
                else:
                    answers = {i.item_key: self.answer(i.uri) for i in hit.items}
                self.state.submit(name, hit.hit_id, answers)
        # What nobody may take (everyone failed a test) is closed, as a team lead would.
        open_ids = [s.hit_id for s in backend.hit_status(hit_ids) if s.state == "open"]
        backend.expire(open_ids)
        super().complete_work(backend, hit_ids)

    def bonuses_paid(self, backend: CrowdBackend, worker_id: str) -> list[Decimal]:
        rows = self.state.execute("SELECT amount FROM bonuses WHERE worker = ?", (worker_id,))
        return [Decimal(amount) for (amount,) in rows]

    @staticmethod
    def answer(uri: str) -> str:
        return YES if conformance_truth(uri, "") else NO
