"""One command -> the system's API calls, through the mapping tables. Used by ``connectors.runner``.

``CrmWriter``: upserts by business code (``GET /<Resource>/code``, then ``PUT`` with the id or
``POST``), so a write repeated after a crash updates instead of creating a second record.

``ActWriter``: master data through ``save_dictionary`` (answered at once); documents as
*proposals* through ``save`` / ``delete``, which answer "queued": the writer returns a ``Pending``
and the runner waits for the result ACT sends to the callback URL (filed in the shared ledger by
the accounting capture service), or pulls ``get_call_back_detail_error`` when it does not come.
A proposal's ``org_refid`` is derived from the record (the target id once known, else tenant,
entity and business code, else the command id), so a retried or later push updates the same
proposal instead of making a second one.

Both note every write in the shared ledger before calling the API, so that the capture services
recognise the change as the integration's own (X-1).

**Extensions** (``extensions``, the setting ``LIENTHONG_CONNECTOR_EXTENSIONS``, off by default):
the sandboxes serve records and fields the public APIs do not have (``docs/amis-gaps.md``). Off,
a writer refuses a command for an extension resource, dictionary or voucher type (``Refused``,
naming it and the setting) and leaves the ``source="EXT"`` fields out of what it sends (a command
of nothing else is refused likewise), so that a real tenant only ever receives the field names of
the reference (``REFERENCE_FIELDS``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from amis import acct_mapping, crm_mapping
from amis.acct_client import (
    DICTIONARY_BATCH,
    VN,
    VOUCHER_BATCH,
    ActClient,
    Callback,
    chunks,
    refusal,
    sync_time,
)
from amis.crm_client import CrmClient, listed_as_deleted
from amis.errors import Refused, Transient
from amis.ledger import CallbackOutcome, WriteNotes
from amis.mapping import MappingError, RecordMap, decimal_text
from amis.money import MoneyError, ProposalMoney, proposal_money
from common.names import System
from streams.core.contract import Command

NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/lienthong/org_refid")

# Proposals with priced lines: their money is computed from the lines (``amis/money.py``).
PRICED_PROPOSALS = frozenset({"sale_order", "contract", "quote"})
# Canonical fields the money is computed from and that the proposal does not carry as they came: a rate
# off the whole order (ACT takes its amount, total_discount_amount) and a line's discount and total.
LINE_INPUTS = ("discount_rate", "discount_amount", "discount_amount_oc", "total_amount", "total_amount_oc")


@dataclass(frozen=True)
class Applied:
    """A command written (or found already so): the id and code of the record it is about."""

    target_id: str | None
    code: str | None


@dataclass(frozen=True)
class Pending:
    """A proposal ACT has queued: the result comes by callback (``data_type`` 1 save, 2 delete)."""

    expected: int  # the shared ledger's row for the awaited result
    tenant: str
    org_refid: str
    data_type: int
    code: str | None
    since: float  # when it was sent (epoch seconds), to look for undelivered callbacks from then on


Answer = Applied | Pending | Exception
# how many commands of each kind (``ActWriter.batch_kind``) one call to ACT takes (§2.5, §2.6)
BATCH_LIMITS = {"dictionary": DICTIONARY_BATCH, "save": VOUCHER_BATCH, "delete": VOUCHER_BATCH}


@dataclass
class Proposal:
    """A proposal ready to go: a voucher for ``save`` (data_type 1) or its key for ``delete`` (2)."""

    command: Command
    org_refid: str
    data_type: int
    voucher: dict[str, Any]
    noted: dict[str, Any]  # what the capture service will see of it (the ledger's note)
    expected: int | None = None  # the shared ledger's row for its awaited callback, once noted

    @property
    def code(self) -> str | None:
        return self.command.key.code


@dataclass(frozen=True)
class DictionaryItem:
    """A dictionary record ready for ``save_dictionary``, and how to tell it in ACT's answer or lists."""

    command: Command
    spec: acct_mapping.ActDictionary
    item: dict[str, Any]
    noted: dict[str, Any]
    record_id: str | None
    state: int  # 1 insert or update, 2 update, 3 delete

    @property
    def code(self) -> str | None:
        return self.command.key.code

    def answered(self, result: dict[str, Any] | None) -> Answer | None:
        """What ACT's own answer for this item says; None when it says too little (no record id)."""
        if result is None:
            return None
        entity, code = self.command.entity, self.code
        if result.get("success") is False or result.get("error_code"):
            if self.state == 3 and "không tồn tại" in str(result.get("error_message")):
                return Applied(self.record_id, code)  # already gone
            return refusal(
                f"ACT save_dictionary {entity} {code or ''}".rstrip(),
                result.get("error_code"),
                result.get("error_message"),
            )
        if self.state == 3:
            return Applied(self.record_id, code)
        target = result.get(self.spec.id_field) or self.command.key.id
        return Applied(str(target), code) if target else None

    def find(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
        """This record among listed rows, by the id sent or by its code."""
        sent_id, code = self.item.get(self.spec.id_field), self.item.get(self.spec.code_field)
        for row in rows:
            if (sent_id and row.get(self.spec.id_field) == sent_id) or (code and row.get(self.spec.code_field) == code):
                return row
        return None

    def holds(self, row: dict[str, Any]) -> bool:
        """Whether a listed row has what was written (of the fields ACT lists: one it leaves out is no proof)."""
        listed = self.spec.record.from_wire(row)
        return all(listed[name] == value for name, value in self.noted.items() if name in listed)


def not_sayable(system: str, exc: MappingError) -> Refused:
    return Refused(f"not sent: {system} cannot hold this value ({exc})", status=400)


EXTENSIONS_SETTING = "LIENTHONG_CONNECTOR_EXTENSIONS"


def extension_refused(what: str, why: str) -> Refused:
    return Refused(
        f"not sent: {what} is not in the public API ({why}); only the sandbox has it, "
        f"written with {EXTENSIONS_SETTING}=true",
        status=404,
    )


def only_extension_fields(command: Command, full: RecordMap) -> Refused | None:
    """A command all of whose fields are extension fields (e.g. SO-10's revenue_entries): with them left
    out nothing is left to say, and an empty write would still touch the record; refused instead."""
    extension = {f.canonical for f in full.fields if f.source == "EXT"}
    named = set(command.fields) - {"code", "id"}
    if not named or not named <= extension:
        return None
    return Refused(
        f"not sent: the public API has no {command.entity} field {', '.join(sorted(named))} and the command has "
        f"no other; only the sandbox has it, written with {EXTENSIONS_SETTING}=true",
        status=404,
    )


def org_refid_for(command: Command) -> str:
    """The proposal's key: the accounting id once the processor knows it (X-3), else derived."""
    if command.key.id:
        return str(command.key.id)
    basis = f"{command.tenant}:{command.entity}:{command.key.code}" if command.key.code else command.command_id
    return str(uuid.uuid5(NAMESPACE, basis))


class CrmWriter:
    system = System.CRM

    def __init__(self, client: CrmClient, ledger: WriteNotes, *, extensions: bool = False) -> None:
        self.client = client
        self.ledger = ledger
        self.extensions = extensions

    async def apply(self, command: Command) -> Applied | Pending:
        spec = crm_mapping.RESOURCES.get(command.entity)
        if spec is None:
            raise Refused(f"CRM has no {command.entity} resource", status=404)
        if spec.extension and not self.extensions:
            raise extension_refused(f"CRM {command.entity} ({spec.resource})", spec.extension)
        record_map = spec.record if self.extensions else spec.record.documented()
        if not self.extensions and (refused := only_extension_fields(command, spec.record)):
            raise refused
        tenant, code = command.tenant, command.key.code
        record_id = command.key.id
        if not record_id and code:
            # a row listed as deleted (is_deleted, §1.4) is no record to update: the upsert creates one
            found = [r for r in await self.client.by_codes(tenant, spec.resource, [code]) if not listed_as_deleted(r)]
            record_id = str(found[0]["id"]) if found else None
        if command.op.value == "delete":
            if not record_id:
                return Applied(None, code)  # already gone: deleting it again changes nothing
            (result,) = await self.client.delete(tenant, spec.resource, [record_id])
            if not result.success and any(
                not listed_as_deleted(r) for r in await self.client.by_ids(tenant, spec.resource, [record_id])
            ):
                raise Refused(f"CRM refused to delete {spec.resource} {record_id}: {result.message()}", status=400)
            return Applied(record_id, code)
        if command.op.value == "update" and not record_id:
            raise Refused(f"CRM {command.entity} {code or '?'} does not exist to update", status=404)
        fields = dict(command.fields)
        if code and "code" not in fields:
            fields["code"] = code
        if command.read_only:
            fields["is_read_only"] = True
        fields.pop("id", None)
        try:
            wire = record_map.to_wire(fields, command.entity)
            noted = record_map.normalize(fields)
        except MappingError as exc:
            raise not_sayable("CRM", exc) from None
        wire.pop("id", None)
        note = await self.ledger.note_write(
            System.CRM, tenant, command.entity, record_id=record_id, code=code, fields=noted
        )
        if record_id:
            (result,) = await self.client.update(tenant, spec.resource, [{"id": int(record_id), **wire}])
            if result.success:
                return Applied(record_id, code)
            if command.op.value == "update" or not any(e.startswith("id:") for e in result.errors):
                raise Refused(f"CRM refused {command.entity} {code or record_id}: {result.message()}", status=400)
            # the record went away since it was linked: an upsert creates it again
        (result,) = await self.client.create(tenant, spec.resource, [wire])
        if not result.success or result.id is None:
            raise Refused(f"CRM refused {command.entity} {code or ''}: {result.message()}".rstrip(), status=400)
        await self.ledger.identify(note, result.id)
        return Applied(result.id, code)


class ActWriter:
    system = System.ACCT

    def __init__(
        self,
        client: ActClient,
        ledger: WriteNotes,
        *,
        branches: dict[str, str] | None = None,
        extensions: bool = False,
        read_back_timeout: float = 10.0,
        read_back_margin: float = 300.0,
    ) -> None:
        self.client = client
        self.ledger = ledger
        self.branches = branches or {}  # tenant -> ACT branch_id its proposals are booked to
        self.extensions = extensions
        # save_dictionary without an answer per item: how long to look for the records (ACT may save
        # them later), and how far before the call to read back from (ACT's clock may differ from ours)
        self.read_back_timeout = read_back_timeout
        self.read_back_margin = read_back_margin
        # how far each tenant's ACT clock is ahead of ours, once a read told: later reads start just
        # before the call by ACT's clock instead of read_back_margin before it
        self._act_ahead: dict[str, float] = {}

    @staticmethod
    def batch_kind(command: Command) -> str | None:
        """Which commands go to ACT in one call with this one: dictionary records (``save_dictionary``),
        proposals (``save``), deletions of proposals (``delete``); None: on its own."""
        if command.entity in acct_mapping.DICTIONARIES:
            return "dictionary"
        if command.entity in acct_mapping.VOUCHERS:
            return "delete" if command.op.value == "delete" else "save"
        return None

    async def apply(self, command: Command) -> Applied | Pending:
        (answer,) = await self.apply_many([command])
        if isinstance(answer, Exception):
            raise answer
        return answer

    def _writable(self, command: Command) -> None:
        """Refused unless the public API has the entity, or extensions are written."""
        spec = acct_mapping.DICTIONARIES.get(command.entity) or acct_mapping.VOUCHERS.get(command.entity)
        if spec is None:
            raise Refused(f"the accounting API has no {command.entity}", status=404)
        if spec.extension and not self.extensions:
            kind = (
                f"dictionary_type {spec.dictionary_type}"
                if isinstance(spec, acct_mapping.ActDictionary)
                else f"voucher_type {spec.voucher_type}"
            )
            raise extension_refused(f"ACT {command.entity} ({kind})", spec.extension)
        if not self.extensions and (refused := only_extension_fields(command, spec.record)):
            raise refused

    def _record_map(self, entity: str) -> RecordMap:
        """The entity's table; without its ``EXT`` fields unless extensions are written."""
        record_map = acct_mapping.record_map(entity)
        return record_map if self.extensions else record_map.documented()

    async def apply_many(self, commands: Sequence[Command]) -> list[Applied | Pending | Exception]:
        """Commands to accounting written together: dictionary records in ``save_dictionary`` calls of at
        most 200, proposals in ``save`` / ``delete`` calls of at most 100. One answer per command, in
        order: what ``apply`` returns, or the exception it raises (``Refused``, ``Transient``)."""
        answers: dict[int, Applied | Pending | Exception] = {}
        items: dict[str, list[tuple[int, DictionaryItem]]] = defaultdict(list)
        proposals: dict[tuple[str, int], list[tuple[int, Proposal]]] = defaultdict(list)
        for n, command in enumerate(commands):
            try:
                self._writable(command)
                if command.entity in acct_mapping.DICTIONARIES:
                    items[command.tenant].append((n, self._dictionary(command)))
                elif command.entity in acct_mapping.VOUCHERS:
                    proposal = self._proposal(command)
                    proposals[(command.tenant, proposal.data_type)].append((n, proposal))
                else:
                    raise Refused(f"the accounting API has no {command.entity}", status=404)
            except (Refused, Transient) as exc:
                answers[n] = exc
        for tenant, prepared in items.items():
            for chunk in chunks(prepared, DICTIONARY_BATCH):
                answers.update(await self._save_items(tenant, chunk))
        for (tenant, data_type), prepared_proposals in proposals.items():
            for chunk in chunks(prepared_proposals, VOUCHER_BATCH):
                answers.update(await self._send(tenant, data_type, chunk))
        return [answers[n] for n in range(len(commands))]

    def _dictionary(self, command: Command) -> DictionaryItem:
        spec = acct_mapping.DICTIONARIES[command.entity]
        tenant, code = command.tenant, command.key.code
        fields = {k: v for k, v in command.fields.items() if k != "id"}
        if code and "code" not in fields:
            fields["code"] = code
        record_id = command.key.id or (
            str(uuid.uuid5(NAMESPACE, f"{tenant}:{command.entity}:{code}")) if code else None
        )
        record_map = self._record_map(command.entity)
        try:
            item = record_map.to_wire({**fields, "id": record_id} if record_id else fields, command.entity)
            noted = record_map.normalize(fields)
        except MappingError as exc:
            raise not_sayable("the accounting system", exc) from None
        state = {"update": 2, "delete": 3}.get(command.op.value, 1)
        item.update(dictionary_type=spec.dictionary_type, state=state)
        return DictionaryItem(command, spec, item, noted, record_id, state)

    async def _save_items(self, tenant: str, chunk: Sequence[tuple[int, DictionaryItem]]) -> dict[int, Answer]:
        """One ``save_dictionary`` call. ACT's answer item by item is taken as it is; an item it did not
        answer with its record (``Data`` null, empty, a count, "queued", success flags without ids: §2.5
        leaves it open) is confirmed by reading the record back before it counts as applied."""
        for _, it in chunk:
            if it.state != 3:
                await self.ledger.note_write(
                    System.ACCT, tenant, it.command.entity, record_id=it.command.key.id, code=it.code, fields=it.noted
                )
        since = self.client.clock()
        refused: Refused | None = None
        try:
            results = await self.client.save_dictionary(tenant, [it.item for _, it in chunk])
        except Refused as exc:
            if exc.code is None or exc.status in (401, 403):  # the call itself: no item was saved
                return {n: exc for n, _ in chunk}
            # the call names a problem without saying which item (or whether the others were saved)
            results, refused = [None] * len(chunk), exc
        except Transient as exc:
            return {n: exc for n, _ in chunk}
        answers: dict[int, Answer] = {}
        unsure: list[tuple[int, DictionaryItem]] = []
        for (n, it), result in zip(chunk, results, strict=True):
            answer = it.answered(result)
            if answer is None:
                unsure.append((n, it))
            else:
                answers[n] = answer
        if unsure:
            answers.update(await self._read_back(tenant, unsure, since, refused))
        return answers

    async def _read_back(
        self, tenant: str, unsure: list[tuple[int, DictionaryItem]], since: float, refused: Refused | None
    ) -> dict[int, Answer]:
        """Look for the records with ``get_dictionary`` (deleted ones with ``get_dictionary_delete``) by
        ``last_sync_time`` from just before the call (by ACT's clock once known), until each holds what was written or
        ``read_back_timeout`` passes (ACT may save later). Not found: refused with ACT's words when the
        call was refused, else a passing fault (the command is saved again: the same id or code)."""
        ahead = self._act_ahead.get(tenant)
        # last_sync_time has whole seconds and ACT's LastSyncTime too: a few seconds spare
        start = since + ahead - 3 if ahead is not None else since - self.read_back_margin
        deadline = time.monotonic() + self.read_back_timeout
        wait = 0.05
        answers: dict[int, Answer] = {}
        left = list(unsure)
        while True:
            groups: dict[tuple[int, bool], list[tuple[int, DictionaryItem]]] = defaultdict(list)
            for n, it in left:
                groups[(it.spec.data_type, it.state == 3)].append((n, it))
            left = []
            for (data_type, deleted), group in groups.items():
                rows, told = await self.client.dictionary_changes(tenant, data_type, start, deleted=deleted)
                if told is not None:
                    self._act_ahead[tenant] = told
                for n, it in group:
                    row = it.find(rows)
                    if row is not None and (deleted or it.holds(row)):
                        answers[n] = Applied(str(row.get(it.spec.id_field) or it.record_id or "") or None, it.code)
                    else:
                        left.append((n, it))
            if not left or refused is not None or time.monotonic() >= deadline:
                break
            await asyncio.sleep(wait)
            wait = min(wait * 2, 1.0)
        for n, it in left:
            what = f"ACT save_dictionary {it.command.entity} {it.code or it.record_id or ''}".rstrip()
            if it.state == 3 and not await self._alive(tenant, it):
                answers[n] = Applied(it.record_id, it.code)  # already gone
            elif refused is not None:
                answers[n] = Refused(
                    f"{what}: not saved; ACT answered: {refused}", status=refused.status, code=refused.code
                )
            else:
                answers[n] = Transient(
                    f"{what}: ACT answered no result per item and the record is not among those changed since "
                    f"{sync_time(start)} after {self.read_back_timeout:g}s; saving it again"
                )
        return answers

    async def _alive(self, tenant: str, it: DictionaryItem) -> bool:
        """Whether a record is still listed (every record of its dictionary is read: ACT has no read by code)."""
        async for row in self.client.every_dictionary_row(tenant, it.spec.data_type):
            if it.find([row]) is not None:
                return True
        return False

    async def _send(self, tenant: str, data_type: int, chunk: Sequence[tuple[int, Proposal]]) -> dict[int, Answer]:
        """One ``save`` (data_type 1) or ``delete`` (2) call; each proposal then waits for its callback."""
        for _, proposal in chunk:
            if proposal.expected is None:
                if data_type == 1:
                    await self.ledger.note_write(
                        System.ACCT,
                        tenant,
                        proposal.command.entity,
                        record_id=proposal.org_refid,
                        code=proposal.code,
                        fields=proposal.noted,
                    )
                proposal.expected = await self.ledger.expect_callback(
                    tenant, proposal.org_refid, data_type, proposal.command.command_id
                )
        since = self.client.clock()
        vouchers = [proposal.voucher for _, proposal in chunk]
        try:
            send = self.client.save if data_type == 1 else self.client.delete
            said = await send(tenant, vouchers)
        except Refused as exc:
            if len(chunk) > 1 and exc.status not in (401, 403):
                # the call was refused for what one voucher holds: each on its own gets its own answer
                answers: dict[int, Answer] = {}
                for one in chunk:
                    answers.update(await self._send(tenant, data_type, [one]))
                return answers
            if data_type == 2 and exc.code == "VoucherNotFound":  # answered at once: already gone
                return {n: Applied(proposal.org_refid, proposal.code) for n, proposal in chunk}
            return {n: exc for n, _ in chunk}
        except Transient as exc:
            return {n: exc for n, _ in chunk}
        for entry in said:  # a voucher the answer itself refused has its result already
            if entry.get("success") is False:
                await self.ledger.file_callback_result(
                    tenant,
                    str(entry["org_refid"]),
                    data_type,
                    False,
                    entry.get("error_code"),
                    entry.get("error_message"),
                )
        return {
            n: Pending(proposal.expected or 0, tenant, proposal.org_refid, data_type, proposal.code, since)
            for n, proposal in chunk
        }

    def _proposal(self, command: Command) -> Proposal:
        spec = acct_mapping.VOUCHERS[command.entity]
        tenant, code = command.tenant, command.key.code
        org_refid = org_refid_for(command)
        since = self.client.clock()
        if command.op.value == "delete":
            return Proposal(command, org_refid, 2, {"voucher_type": spec.voucher_type, "org_refid": org_refid}, {})
        fields = {k: v for k, v in command.fields.items() if k != "id"}
        if code and "code" not in fields:
            fields["code"] = code
        priced = command.entity in PRICED_PROPOSALS
        if priced:
            if tenant in self.branches:
                fields["branch_id"] = self.branches[tenant]
            if isinstance(fields.get("lines"), list):
                try:
                    fields = with_money(fields, proposal_money(fields))
                except MoneyError as exc:
                    raise Refused(
                        f"not sent: the money of {command.entity} {code or org_refid} cannot be computed: {exc}",
                        status=400,
                    ) from None
            # else: an update without lines (a status) says nothing of the money, and sends none
        record_map = self._record_map(command.entity)
        try:
            voucher = record_map.to_wire({**fields, "id": org_refid}, command.entity)
            noted = record_map.normalize(fields)
        except MappingError as exc:
            raise not_sayable("the accounting system", exc) from None
        today = datetime.fromtimestamp(since, tz=VN).strftime("%Y-%m-%d")
        voucher.update(
            voucher_type=spec.voucher_type,
            org_refid=org_refid,
            org_refno=code or voucher.get("refno") or org_refid,
            org_reftype=spec.reftype,
            reftype=spec.reftype,
            is_get_new_id=False,  # the voucher ACT generates keeps our ids: refid = org_refid
            refdate=voucher.get("refdate") or today,
            posted_date=voucher.get("posted_date") or today,
        )
        if not priced:  # receipts and the like: one VND amount
            voucher.update(currency_id="VND", exchange_rate=1, total_amount_oc=voucher.get("total_amount", 0))
            for n, line in enumerate(voucher.get("detail") or [], start=1):
                if isinstance(line, dict):
                    line.setdefault("sort_order", n)
                    if "amount" in line:
                        line["amount_oc"] = line["amount"]
        return Proposal(command, org_refid, 1, voucher, noted)

    async def outcome(self, pending: Pending) -> CallbackOutcome | None:
        return await self.ledger.callback_outcome(pending.expected)

    async def recover(self, pending: Pending) -> CallbackOutcome | None:
        """No callback came: ask ACT for the callbacks it could not deliver since the proposal was sent."""
        callbacks: list[Callback] = await self.client.undelivered(
            pending.tenant, pending.since - 60, self.client.clock() + 60
        )
        for callback in callbacks:  # pulled with the tenant's own token: the tenant's callbacks
            await self.ledger.file_results(callback, pending.tenant)
        return await self.outcome(pending)

    def settle(self, pending: Pending, outcome: CallbackOutcome) -> Applied:
        if outcome.success:
            return Applied(pending.org_refid, pending.code)
        if pending.data_type == 2 and outcome.error_code == "VoucherNotFound":
            return Applied(pending.org_refid, pending.code)  # already gone
        what = "save" if pending.data_type == 1 else "delete"
        raise refusal(f"ACT {what} of {pending.code or pending.org_refid}", outcome.error_code, outcome.error_message)


def with_money(fields: dict[str, Any], money: ProposalMoney) -> dict[str, Any]:
    """The proposal's canonical record with its money as ``amis.money`` computed it (decimal strings):
    every amount and total, the currency and rate, the discount type; each line's amount, VAT and place.
    Line discounts are not sent (§2.6 lists no such field of a line): they are in the header's
    ``discount_amount`` (total_discount_amount), and each line's VAT is charged on its amount after them."""
    out = {k: v for k, v in fields.items() if k != "discount_rate"}
    lines = []
    given = [line for line in fields.get("lines") or [] if isinstance(line, dict)]
    for n, (line, computed) in enumerate(zip(given, money.lines, strict=True), start=1):
        # a rate or price left empty is said by leaving it out, not by an empty value ACT cannot read
        kept = {k: v for k, v in line.items() if k not in LINE_INPUTS and k not in ("unit_price", "vat_rate")}
        kept.update(
            quantity=decimal_text(computed.quantity),
            amount=decimal_text(computed.amount),
            amount_oc=decimal_text(computed.amount_oc),
            vat_amount=decimal_text(computed.vat_amount),
            vat_amount_oc=decimal_text(computed.vat_amount_oc),
            sort_order=n,
        )
        if computed.unit_price is not None:
            kept["unit_price"] = decimal_text(computed.unit_price)
        if computed.vat_rate is not None:
            kept["vat_rate"] = decimal_text(computed.vat_rate)
        lines.append(kept)
    out.update(
        lines=lines,
        currency=money.currency,
        exchange_rate=decimal_text(money.exchange_rate),
        discount_type=money.discount_type,
        sale_amount=decimal_text(money.sale_amount),
        sale_amount_oc=decimal_text(money.sale_amount_oc),
        discount_amount=decimal_text(money.discount_amount),
        discount_amount_oc=decimal_text(money.discount_amount_oc),
        vat_amount=decimal_text(money.vat_amount),
        vat_amount_oc=decimal_text(money.vat_amount_oc),
        total_amount=decimal_text(money.total_amount),
        total_amount_oc=decimal_text(money.total_amount_oc),
    )
    return out


class ResultNotFound(Transient):
    """ACT took a proposal and no result for it came, neither by callback nor among the undelivered
    ones: the connector saves it again (the same ``org_refid``: the same proposal)."""


def no_callback(pending: Pending, waited: float) -> ResultNotFound:
    return ResultNotFound(
        f"no result for proposal {pending.code or pending.org_refid} ({pending.org_refid}) within {waited:g}s, "
        "neither by callback nor in get_call_back_detail_error: is the callback URL registered and the accounting "
        "capture service running?"
    )


Writer = CrmWriter | ActWriter
