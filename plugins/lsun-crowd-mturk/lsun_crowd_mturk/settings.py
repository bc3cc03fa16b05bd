"""The ``[crowd.settings]`` of a project that publishes to Mechanical Turk.

Credentials are never settings: they come from the standard AWS chain (environment, shared
files, instance roles) or the named ``profile``, and are never stored or logged.
"""

from __future__ import annotations

import os
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SANDBOX_ENDPOINT = "https://mturk-requester-sandbox.us-east-1.amazonaws.com"
LIVE_ENDPOINT = "https://mturk-requester.us-east-1.amazonaws.com"
SANDBOX_WORKER_SITE = "https://workersandbox.mturk.com"
LIVE_WORKER_SITE = "https://worker.mturk.com"
SANDBOX_SUBMIT_URL = "https://workersandbox.mturk.com/mturk/externalSubmit"
LIVE_SUBMIT_URL = "https://www.mturk.com/mturk/externalSubmit"
ENDPOINT_VARIABLE = "AWS_ENDPOINT_URL_MTURK"  # boto3's standard per-service endpoint override


class MTurkSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    live: bool = False  # sandbox unless this (or --live) says otherwise
    profile: str | None = None  # a named profile of the AWS shared files; None: the default chain
    region: str = "us-east-1"  # MTurk's only region
    endpoint_url: str | None = None  # wins over the mode and over AWS_ENDPOINT_URL_MTURK
    title: str = Field(default="Which of these images show a {category}?", min_length=1)
    description: str = "Look at each image and answer yes or no: does it show the named thing?"
    keywords: str = "image, labeling, yes/no, categorization"
    instructions: str = "Answer yes only if the image clearly shows the named thing."
    examples: dict[str, dict[Literal["yes", "no"], list[str]]] = Field(default_factory=dict)  # category → URLs
    auto_approval_delay_seconds: int = Field(default=3 * 24 * 3600, ge=0, le=30 * 24 * 3600)
    min_approval_rate: int | None = Field(default=95, ge=0, le=100)  # percent; None: no requirement
    min_approved_hits: int | None = Field(default=100, ge=0)
    locales: list[str] = Field(default_factory=lambda: ["US"])  # ISO country codes; empty: anywhere
    block: Literal["soft", "hard"] = "soft"  # our own qualification, or MTurk's CreateWorkerBlock
    frame_height: int = Field(default=0, ge=0)  # 0: MTurk sizes the frame to the page
    image_url_prefix: str | None = None  # turns local image paths under image_root into URLs
    image_root: str | None = None
    max_attempts: int = Field(default=6, ge=1, le=20)  # per request, for throttling and faults
    max_retry_seconds: float = Field(default=120.0, gt=0)
    bonus_limit: Decimal = Field(default=Decimal("5.00"), gt=0)  # refuse a larger single bonus

    def endpoint(self) -> str:
        """An explicit override wins over the mode: the setting, then boto3's variable."""
        return (
            self.endpoint_url or os.environ.get(ENDPOINT_VARIABLE) or (LIVE_ENDPOINT if self.live else SANDBOX_ENDPOINT)
        )

    def worker_site(self) -> str:
        return LIVE_WORKER_SITE if self.live else SANDBOX_WORKER_SITE

    def submit_url(self) -> str:
        return LIVE_SUBMIT_URL if self.live else SANDBOX_SUBMIT_URL

    def examples_for(self, category: str) -> list[tuple[str, bool]]:
        shown = self.examples.get(category, {})
        return [(url, True) for url in shown.get("yes", [])] + [(url, False) for url in shown.get("no", [])]

    def preview_url(self, hit_type_id: str) -> str:
        return f"{self.worker_site()}/mturk/preview?groupId={hit_type_id}"
