"""Change capture for AMIS CRM, which pushes nothing: poll each resource newest first by ``modified_date``.

CRM's lists have no filter and no total (``amis-apis.md`` §1.4), so each poll of a resource reads
pages of ``page_size`` (≤ 100), newest first, until it reaches records modified before the
watermark (less ``overlap_s``), and reports every record whose canonical image differs from the
one it keeps. The watermark moves only when a scan is complete, so a restart in the middle of a
scan reads it again; images make the records already reported no news.

* **Equal timestamps at a page boundary**: the scan stops only *below* the watermark, never at it,
  so records sharing the newest timestamp are read again next time and compared with their images.
* **Records modified during the scan** move to the first page: the rows after them shift down and
  are read twice (no news the second time); the moved record is newer than the watermark and is
  read by the next poll. A deletion shifts rows up; the overlap reads the last ``overlap_s``
  seconds again so a row skipped that way is read next time.
* **Deletions** are not listed at all: every ``deletion_scan_every`` polls the whole resource is
  listed, and records remembered but not listed are looked up by id; those CRM no longer has are
  reported deleted (with their last image as ``before``). The same listing compares every record
  with its image, so a record a deletion shifted past during the first (unfiltered) scan, which no
  watermark would bring back, is reported then.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from amis import crm_mapping
from amis.crm_client import MAX_PAGE_SIZE, CrmClient
from capture.polling import PollingCapture, tried_again_next_poll
from capture.state import ChangeReporter
from common import metrics
from common.names import System


def modified_ms(row: dict) -> int:
    text = row.get("modified_date") or row.get("created_date")
    if not text:
        return 0
    return int(datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp() * 1000)


class CrmCapture(PollingCapture):
    def __init__(
        self,
        client: CrmClient,
        reporter: ChangeReporter,
        tenants: Sequence[str],
        *,
        entities: Sequence[str] = tuple(crm_mapping.DOCUMENTED),
        page_size: int = MAX_PAGE_SIZE,
        overlap_s: float = 60.0,
        poll_interval: float = 5.0,
        deletion_scan_every: int = 12,
    ) -> None:
        super().__init__(poll_interval)
        self.client = client
        self.reporter = reporter
        self.state = reporter.state
        self.tenants = list(tenants)
        self.entities = list(entities)
        self.page_size = page_size
        self.overlap_ms = int(overlap_s * 1000)
        self.deletion_scan_every = max(1, deletion_scan_every)
        self.polls = 0

    async def poll_all(self) -> None:
        self.polls += 1
        deletions = self.polls % self.deletion_scan_every == 0
        for tenant in self.tenants:
            for entity in self.entities:
                with tried_again_next_poll(f"CRM capture of {tenant} {entity}", tenant=tenant, entity=entity):
                    await self.poll(tenant, entity)
                    if deletions:
                        await self.scan_deletions(tenant, entity)

    async def poll(self, tenant: str, entity: str) -> int:
        """One scan of one resource; returns how many change events it produced."""
        spec = crm_mapping.RESOURCES[entity]
        name = f"crm:{tenant}:{entity}"
        watermark = self.state.watermark(name)
        floor = None if watermark is None else watermark - self.overlap_ms
        newest = watermark or 0
        produced = 0
        page = 1
        while True:
            rows = await self.client.list_page(tenant, spec.resource, page, self.page_size)
            reached_floor = False
            for row in rows:
                stamp = modified_ms(row)
                if floor is not None and stamp < floor:
                    reached_floor = True
                    break
                newest = max(newest, stamp)
                event = await self.reporter.observed(
                    tenant,
                    entity,
                    spec.record.from_wire(row),
                    marker=str(row.get("modified_date")),
                    ts_ms=stamp,
                    snapshot=watermark is None,
                )
                produced += event is not None
            if reached_floor or len(rows) < self.page_size:
                break
            page += 1
        self.state.set_watermark(name, newest)
        metrics.CAPTURE_LAST_POLL.labels(System.CRM, entity).set_to_current_time()
        return produced

    async def scan_deletions(self, tenant: str, entity: str) -> int:
        spec = crm_mapping.RESOURCES[entity]
        listed: set[str] = set()
        produced = 0
        async for row in self.client.every_row(tenant, spec.resource, self.page_size):
            listed.add(str(row.get("id")))
            # a record the incremental scans skipped (a deletion shifted it up between two pages of the
            # first, unfiltered scan) is reported now; the others equal their images and are no news
            event = await self.reporter.observed(
                tenant,
                entity,
                spec.record.from_wire(row),
                marker=str(row.get("modified_date")),
                ts_ms=modified_ms(row),
                snapshot=True,
            )
            produced += event is not None
        missing = sorted(self.state.live_ids(System.CRM, tenant, entity) - listed)
        for start in range(0, len(missing), 50):
            batch = missing[start : start + 50]
            still_there = {str(r.get("id")) for r in await self.client.by_ids(tenant, spec.resource, batch)}
            for record_id in batch:
                if record_id in still_there:
                    continue  # moved between pages while listing: not deleted
                event = await self.reporter.gone(
                    tenant, entity, record_id, marker="deleted", ts_ms=int(self.client.clock() * 1000)
                )
                produced += event is not None
        return produced
