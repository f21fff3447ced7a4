"""The results agent: connectors' reports complete the cross-system links (X-3)."""

from __future__ import annotations

import logging
from typing import Any

import faust
import orjson
from faust.types import EventT
from pydantic import ValidationError

from streams.agents.pipeline import AgentDeps, Batch, count_event, run_batches, where_of
from streams.core.commands import command_key_text
from streams.core.contract import CommandKey, Result
from streams.core.decide import LinkUpdate, link_family
from streams.tables import BatchState

log = logging.getLogger(__name__)


def link_from_result(result: Result) -> LinkUpdate | None:
    """An applied (or already applied) write tells the target's id for the record's business code."""
    if result.status not in ("applied", "duplicate") or not result.target_id:
        return None
    return LinkUpdate(
        tenant=result.tenant,
        family=link_family(result.target, result.entity),
        code=result.code,
        ids={result.target.value: result.target_id},
    )


def forget_unwritten(state: BatchState, result: Result) -> None:
    """A command the target refused or never got did not write its fields: X-2 must not count them.

    Only when the memory still holds that very command (a later write may have replaced it).
    """
    if result.status not in ("rejected", "failed") or not (result.code or result.target_id):
        return
    # The command's record, named as the command named it: by code, else by id.
    key = command_key_text(
        result.tenant, result.target, result.entity, CommandKey(code=result.code, id=result.target_id)
    )
    remembered = state.get("written", key)
    if remembered and remembered.get("command_id") == result.command_id:
        state.delete("written", key, None)


def register_results_agent(app: faust.App, source: Any, deps: AgentDeps) -> Any:
    @app.agent(source, name="lienthong.results", concurrency=1)
    async def results(stream: Any) -> None:
        """Learn links from connector results, a batch at a time.

        Input topics: ``results.crm``, ``results.acct`` (raw JSON; key as the command's).
        Tables: ``links`` (completed by applied writes), ``written`` (a rejected or failed command's
        fields are forgotten, so the same change can be sent again).
        Output topics: ``dlq.cdc`` for a result that cannot be read.
        """
        await run_batches(stream, deps, "results", learn_from_result, applies_matrix=False)

    return results


def learn_from_result(batch: Batch, event: EventT) -> None:
    try:
        result = Result.model_validate(orjson.loads(event.value))
    except (orjson.JSONDecodeError, ValidationError, TypeError) as exc:
        batch.dead_letter(event.message.key, event.value, "schema", f"not a result: {exc}", where_of(event))
        return
    count_event(batch, result.target.value, result.entity, "result")
    link = link_from_result(result)
    if link is not None:
        batch.state.apply_links([link])
    forget_unwritten(batch.state, result)
