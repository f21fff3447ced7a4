"""The overall status at the top of the operator's page: one word for "is everything all right?".

Pure: computed from what the page already knows (the looks at the broker, the services' ``/metrics``
that did not answer, the records' sync states). The worst of these decides the state:

* **down** — a service given with ``--scrape`` does not answer its ``/metrics``, the broker did not
  answer the last look (or none for a while), or reading the topics stopped;
* **failing** — N records are failing (a command refused or failed, a change dead-lettered);
* **lag rising** — a consumer group's lag is higher than it was up to ``LAG_WINDOW_S`` ago;
* **pending** — nothing wrong, but N records wait for a result;
* **in sync** — every record is in sync and nothing above holds.

Each condition that holds is one item under the headline, in the words the page shows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

from ops.dashboard.collect import Sample

State = Literal["down", "failing", "lag rising", "pending", "in sync", "starting"]
LAG_WINDOW_S = 60.0  # a group's lag is "rising" when it is higher than at the first look of this window
STALE_LOOKS = 3  # no look for this many intervals: the broker is taken as not answering


@dataclass(frozen=True)
class StatusItem:
    kind: State
    text: str
    link: str | None = None  # an anchor of the page that shows more


@dataclass(frozen=True)
class OverallStatus:
    state: State
    headline: str
    items: list[StatusItem] = field(default_factory=list)


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def lag_rising(history: list[Sample], window_s: float = LAG_WINDOW_S) -> dict[str, tuple[int, int, float]]:
    """group -> (lag at the window's first look, lag now, seconds between) for every group whose lag is
    higher now than then and did not fall at the last look. Needs three looks."""
    if len(history) < 3:
        return {}
    now, previous = history[-1], history[-2]
    window = [s for s in history if s.at >= now.at - window_s]
    first = window[0] if len(window) >= 3 else history[-3]
    then, before = first.lag_by_group(), previous.lag_by_group()
    return {
        group: (then.get(group, 0), lag, now.at - first.at)
        for group, lag in now.lag_by_group().items()
        if lag > then.get(group, 0) and lag >= before.get(group, 0)
    }


def overall_status(
    history: list[Sample],
    *,
    interval: float,
    failing: int,
    pending: int,
    records: int,
    sample_error: str | None,
    tail_error: str | None,
    now: float | None = None,
) -> OverallStatus:
    """The page's headline and the conditions under it (module docstring)."""
    now = time.time() if now is None else now
    last = history[-1] if history else None
    items: list[StatusItem] = []
    if sample_error:
        items.append(StatusItem("down", sample_error))
    elif last is not None and now - last.at > max(STALE_LOOKS * interval, 15.0):
        seen = time.strftime("%H:%M:%S UTC", time.gmtime(last.at))
        items.append(StatusItem("down", f"no look at the broker since {seen}: it does not answer"))
    for url, error in (last.scrape_errors if last else {}).items():
        items.append(StatusItem("down", f"a service is down: its /metrics at {url} does not answer ({error})"))
    if tail_error:
        items.append(StatusItem("down", tail_error))
    if failing:
        items.append(StatusItem("failing", f"{plural(failing, 'record')} failing", "#not-in-sync"))
    for group, (then, lag, seconds) in lag_rising(history).items():
        items.append(
            StatusItem("lag rising", f"lag rising: {group} from {then} to {lag} messages in {seconds:.0f} s", "#lag")
        )
    if pending:
        items.append(StatusItem("pending", f"{plural(pending, 'record')} waiting for a result", "#not-in-sync"))
    downs = sum(1 for item in items if item.kind == "down")
    words = {
        "down": "a service is down" if downs == 1 else f"{downs} services down",
        "failing": f"{plural(failing, 'record')} failing",
        "lag rising": "lag rising",
    }
    problems: list[State] = [kind for kind in ("down", "failing", "lag rising") if any(i.kind == kind for i in items)]
    if problems:
        headline = " · ".join(words[kind] for kind in problems)
        return OverallStatus(problems[0], headline[0].upper() + headline[1:], items)
    if last is None:
        return OverallStatus("starting", "Starting: the first look at the broker has not finished yet", items)
    if pending:
        return OverallStatus("pending", f"Nothing failing; {plural(pending, 'record')} waiting for a result", items)
    return OverallStatus("in sync", f"All in sync: {plural(records, 'record')}, none failing or pending", items)
