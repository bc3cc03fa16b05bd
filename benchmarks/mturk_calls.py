"""Requests a round makes of Mechanical Turk, per HIT published, over real HTTP.

    python benchmarks/mturk_calls.py [--other-hits 300]

One round of the MTurk tests' project (200 digits, 60 sampled, three votes per image: 7 HITs)
runs against the local MTurk-compatible server (``plugins/lsun-crowd-mturk/tests/turk_server.py``)
on an account that also holds ``--other-hits`` HITs of another project. Prints every operation's
count and the total per HIT published.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "plugins" / "lsun-crowd-mturk" / "tests"
sys.path.insert(0, str(TESTS))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--other-hits", type=int, default=300, help="another project's HITs on the account")
    args = parser.parse_args()

    from fake_turk import FakeTurk
    from lsun_crowd_mturk import Api, MTurkCrowd, MTurkSettings, make_client
    from test_client import batch
    from test_round import Workers, cascade, make_project, settings_for
    from turk_server import TurkServer

    from lsun_crowd.project import Project

    with TurkServer(FakeTurk()) as server:
        os.environ.update(
            AWS_ENDPOINT_URL_MTURK=server.url,
            AWS_ACCESS_KEY_ID="AKIDLOCALTURKSERVER0",
            AWS_SECRET_ACCESS_KEY="local-turk-server-secret",
            AWS_CONFIG_FILE="/nonexistent",
            AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
        )

        def crowd(settings: MTurkSettings, name: str) -> MTurkCrowd:
            return MTurkCrowd(Api(make_client(settings), settings, sleep=lambda _: None), settings, name)

        other = crowd(MTurkSettings(image_root="/img", image_url_prefix="https://i.example.org"), "other")
        for number in range(0, args.other_hits, 19):
            other.publish(batch(f"other#00000000:cat:r{number}", hits=min(19, args.other_hits - number)))
        before = Counter(name for name, _ in server.turk.calls)
        directory = Path(tempfile.mkdtemp()) / "project"
        targets = make_project(directory, collect_timeout=30.0)
        project = Project.open(directory)
        cascade(project, crowd(settings_for(directory), "digits-demo"), Workers(server.turk, targets, starve=0)).run(
            max_rounds=1
        )
        project.close()
        calls = Counter(name for name, _ in server.turk.calls) - before
        published = calls["CreateHITWithHITType"]
        print(
            f"one round: {published} HITs published, {sum(calls.values())} requests, "
            f"{sum(calls.values()) / published:.1f} per HIT; the account held {args.other_hits} other HITs"
        )
        for name, count in calls.most_common():
            print(f"  {name}: {count} ({count / published:.2f} per HIT)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
