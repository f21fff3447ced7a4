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
* **Deletions**: whether CRM keeps deleted rows in its lists is unknown (§1.4). A row listed with
  ``is_deleted`` true is reported deleted when a scan reads it. Rows dropped from the lists are
  found another way: every ``deletion_scan_every`` polls the whole resource is listed, and records
  remembered but not listed are looked up by id; those CRM no longer has (or has as deleted) are
  reported deleted (with their last image as ``before``). The same listing compares every record
  with its image, so a record a deletion shifted past during the first (unfiltered) scan, which no
  watermark would bring back, is reported then.
* **The first page** is ``0`` or ``1`` (§1.4): ``CrmClient.every_row`` reads from page 0 until the
  API has shown which, each row once.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import aclosing
from datetime import datetime

from amis import crm_mapping
from amis.crm_client import MAX_PAGE_SIZE, CrmClient, listed_as_deleted
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
        # every_row reads the listing whichever page number is the first (0 or 1, §1.4), each row once
        async with aclosing(self.client.every_row(tenant, spec.resource, self.page_size)) as rows:
            async for row in rows:
                stamp = modified_ms(row)
                if floor is not None and stamp < floor:
                    break
                newest = max(newest, stamp)
                if listed_as_deleted(row):
                    produced += await self._deleted(tenant, entity, row) is not None
                    continue
                event = await self.reporter.observed(
                    tenant,
                    entity,
                    spec.record.from_wire(row),
                    marker=str(row.get("modified_date")),
                    ts_ms=stamp,
                    snapshot=watermark is None,
                )
                produced += event is not None
        self.state.set_watermark(name, newest)
        metrics.CAPTURE_LAST_POLL.labels(System.CRM, entity).set_to_current_time()
        return produced

    async def scan_deletions(self, tenant: str, entity: str) -> int:
        spec = crm_mapping.RESOURCES[entity]
        listed: set[str] = set()
        produced = 0
        async for row in self.client.every_row(tenant, spec.resource, self.page_size):
            if listed_as_deleted(row):
                produced += await self._deleted(tenant, entity, row) is not None
                continue
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
            found = await self.client.by_ids(tenant, spec.resource, batch)
            still_there = {str(r.get("id")) for r in found if not listed_as_deleted(r)}
            for record_id in batch:
                if record_id in still_there:
                    continue  # moved between pages while listing: not deleted
                event = await self.reporter.gone(
                    tenant, entity, record_id, marker="deleted", ts_ms=int(self.client.clock() * 1000)
                )
                produced += event is not None
        return produced

    async def _deleted(self, tenant: str, entity: str, row: dict) -> dict | None:
        """A row listed with ``is_deleted``: the record's deletion (once, when it was alive in the image)."""
        return await self.reporter.gone(tenant, entity, str(row.get("id")), marker="deleted", ts_ms=modified_ms(row))
