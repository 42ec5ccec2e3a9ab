"""Starter rule files offered by the console's "new rule" button.

Each starter is a complete, valid rule file with its own passing `tests:`, commented in
English and Vietnamese, so that a business user starts from something that works and
changes values rather than facing an empty page. They ship as package data (read through
importlib.resources), so an installed wheel offers the same starters as a checkout.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True)
class Starter:
    """One starter: `name` is also the file name it suggests (`<name>.yaml`)."""

    name: str
    title_en: str
    title_vi: str
    text: str


#: In the order the console lists them: (file name without .yaml, English title, Vietnamese title).
_STARTERS = (
    ("tag-facebook-lead", "Tag a lead that comes from Facebook", "Gắn nhãn khách hàng đến từ Facebook"),
    ("slack-on-funnel-change", "Notify Slack when a ticket changes funnel stage",
     "Báo Slack khi ticket chuyển giai đoạn phễu"),
    ("escalate-complaint", "Escalate a complaint, with or without accents",
     "Chuyển khiếu nại lên cấp trên, dù có dấu hay không dấu"),
)  # fmt: skip


def starters() -> list[Starter]:
    """Every starter with its text, read fresh: they are small and read only when a user asks for one."""
    folder = resources.files(__name__)
    return [Starter(name, title_en, title_vi, folder.joinpath(f"{name}.yaml").read_text(encoding="utf-8"))
            for name, title_en, title_vi in _STARTERS]  # fmt: skip


def starter(name: str) -> Starter | None:
    """The starter called `name`, or None: a name from a request is never used as a path."""
    return next((s for s in starters() if s.name == name), None)
