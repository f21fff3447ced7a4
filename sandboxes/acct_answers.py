"""How the accounting sandbox answers where the ACT reference says [UNK] (``amis-apis.md`` Part 5):
``LIENTHONG_SANDBOX_ACCT_ANSWERS``, a JSON object with one field per unknown. Each field's choices are the
answers the reference leaves possible; the defaults are what the sandbox has always done. The test
suite runs the connector and the capture service against each choice, so none is bet on.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class AcctAnswers(BaseModel):
    """One choice per unknown of the ACT Open API."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    save_dictionary: Literal["records", "flags", "null", "empty", "count", "queued"] = Field(
        "records",
        description="What save_dictionary's Data holds (§2.5, [UNK]): per-item records with ids; per-item "
        "success flags without ids; null; an empty array; the number of items saved; or 'queued' (saved a "
        "moment later). Without per-item records a refused item makes the whole call Success: false with its "
        "message, the others saved.",
    )
    save_data: Literal["null", "text", "results"] = Field(
        "null",
        description="What the synchronous Data of save / delete holds (§2.6, [UNK]): null; a text (a session id); "
        "or one acceptance per voucher. The result still comes by callback.",
    )
    save_status: Literal[200, 201] = Field(200, description="The HTTP status of an accepted save / delete.")
    delete_missing: Literal["callback", "answer"] = Field(
        "callback",
        description="Deleting a proposal that does not exist: VoucherNotFound in the data_type 2 callback, or "
        "at once as the call's answer (Success: false).",
    )
    order_link: Literal["sa_order_refid", "reference", "line"] = Field(
        "sa_order_refid",
        description="How a voucher the accountant enters names its order in callbacks (§2.6): a top-level "
        "sa_order_refid; the reference header (org_refer_refid, org_refer_refno, org_refer_reftype 3520); or "
        "sa_order_refid on each line.",
    )
    generated: Literal["as_proposed", "recorded"] = Field(
        "as_proposed",
        description="What callback 18 (shape only observed) carries when the accountant generates an order: "
        "the voucher as proposed, or already recorded (revenue_status 1).",
    )
