"""AMIS Kế toán ACT Open API <-> the contract: dictionaries and vouchers, as data.

Master data travels through ``save_dictionary`` (each item carries its ``dictionary_type``, the
*write* enum) and ``get_dictionary`` / ``get_dictionary_delete`` (``data_type``, the *read* enum:
the two enums differ, ``amis-apis.md`` §2.5). Documents are *proposals* pushed with ``save`` (one
``voucher_type`` each, identified by the partner's ``org_refid``) and come back only through
callbacks (data_type 18: generated, 22: changed by the accountant). Names are snake_case; money is
a number with an ``_oc`` twin in the original currency; the plain one is in VND (``amis/money.py``
computes both for the proposals the connector sends).

Entities or fields marked ``EXT`` / ``extension`` have no public counterpart (sales contracts,
quotes and price policies as documents or dictionaries, reading categories back, issuance-proposal
statuses): only the sandbox keeps them, and ``docs/amis-gaps.md`` says what a live deployment needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from amis.mapping import FieldMap, RecordMap
from amis.money import DISCOUNT_TYPES

# --- dictionaries ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActDictionary:
    entity: str
    dictionary_type: int  # save_dictionary's enum (doc §3.2)
    data_type: int  # get_dictionary's enum (doc §3.3)
    id_field: str
    code_field: str
    record: RecordMap
    extension: str | None = None

    def holds(self, row: dict[str, Any]) -> bool:
        """Whether a listed row is one of this dictionary's records: vendors and employees are account
        objects (``data_type`` 1) as customers are, and only customers are synced."""
        return not (self.data_type == 1 and row.get("is_customer") is False)


DICTIONARIES: dict[str, ActDictionary] = {
    "customer": ActDictionary(
        "customer",
        dictionary_type=1,
        data_type=1,
        id_field="account_object_id",
        code_field="account_object_code",
        record=RecordMap(
            fields=(
                FieldMap("id", "account_object_id", "text"),
                FieldMap("code", "account_object_code"),
                FieldMap("name", "account_object_name"),
                FieldMap("tax_code", "company_tax_code"),
                FieldMap("address", "address"),
                FieldMap("phone", "tel", source="OBS"),
                FieldMap("email", "email_address", source="OBS"),
                FieldMap("is_personal", "account_object_type", values={False: 0, True: 1}, source="CODE"),
                FieldMap("crm_id", "crm_id", "text", source="OBS"),
            ),
            constants={"is_customer": True, "is_vendor": False, "is_employee": False},
        ),
    ),
    "product": ActDictionary(
        "product",
        dictionary_type=3,
        data_type=2,
        id_field="inventory_item_id",
        code_field="inventory_item_code",
        record=RecordMap(
            fields=(
                FieldMap("id", "inventory_item_id", "text"),
                FieldMap("code", "inventory_item_code"),
                FieldMap("name", "inventory_item_name"),
                FieldMap("unit", "unit_name"),
                FieldMap("unit_price", "unit_price", "money"),
                # Not in §2.5's type-3 item fields: sent only to the sandbox. The contract's category_code of a
                # product read from CRM is CRM's product_category text, a category's *name* live (CRM has no
                # category codes), the code of a ProductCategories record only in the sandbox.
                FieldMap("category_code", "inventory_item_category_code", source="EXT"),
                FieldMap("vat_rate", "tax_rate", "money", source="EXT", note="no VAT field among §2.5's item fields"),
            ),
            constants={"inventory_item_type": 0},
        ),
    ),
    "product_category": ActDictionary(
        "product_category",
        dictionary_type=4,
        data_type=902,
        id_field="inventory_item_category_id",
        code_field="inventory_item_category_code",
        record=RecordMap(
            fields=(
                FieldMap("id", "inventory_item_category_id", "text", source="INF"),
                FieldMap("code", "inventory_item_category_code", source="INF"),
                FieldMap("name", "inventory_item_category_name", source="INF"),
                FieldMap("parent_code", "parent_code", source="INF"),
            )
        ),
        extension="item groups: dictionary_type 4 exists for save_dictionary but the reference names none of its "
        "item fields, and no get_dictionary data_type reads them; the sandbox takes the fields above and serves them "
        "as data_type 902",
    ),
    "price_policy": ActDictionary(
        "price_policy",
        dictionary_type=901,
        data_type=901,
        id_field="price_policy_id",
        code_field="price_policy_code",
        record=RecordMap(
            fields=(
                FieldMap("id", "price_policy_id", "text", source="EXT"),
                FieldMap("code", "price_policy_code", source="EXT"),
                FieldMap("name", "price_policy_name", source="EXT"),
            ),
            passthrough=True,
        ),
        extension="price policies are neither read nor written by the public API; the sandbox serves them as "
        "dictionary/data type 901",
    ),
}

# --- vouchers -------------------------------------------------------------------------------------

REVENUE_STATUS = {"not_recorded": 0, "recorded": 1}
ORDER_STATUS = {"not_started": 0, "in_progress": 1, "completed": 2, "cancelled": 3}
CONTRACT_STATUS = {**ORDER_STATUS, "fully_delivered": 4}
DELIVERED_STATUS = {"not_delivered": 0, "delivering": 1, "delivered": 2}

ORDER_DETAIL = RecordMap(
    fields=(
        FieldMap("line_id", "ref_detail_id", "text", source="CODE", note="the partner's line id (is_get_new_id false)"),
        FieldMap("product_code", "inventory_item_code"),
        FieldMap("quantity", "quantity", "number"),
        FieldMap("unit_price", "unit_price", "money"),
        FieldMap("amount", "amount", "money"),
        # §2.6's detail line: amount_oc, vat_rate, vat_amount, sort_order. It lists no discount of a line:
        # discounts travel in the header (discount_type, total_discount_amount); see ``amis/money.py``.
        FieldMap("amount_oc", "amount_oc", "money", source="CODE"),
        FieldMap("vat_rate", "vat_rate", "money", source="CODE", note="percent, a number: 10"),
        FieldMap("vat_amount", "vat_amount", "money", source="CODE"),
        FieldMap("vat_amount_oc", "vat_amount_oc", "money", source="INF", note="§2.6: 'money fields come in pairs'"),
        FieldMap("sort_order", "sort_order", "number", source="CODE"),
    )
)
DELIVERY_DETAIL = RecordMap(
    fields=(
        FieldMap("line_id", "sa_order_ref_detail_id", "text", source="INF", note="the order line it delivers"),
        FieldMap("product_code", "inventory_item_code"),
        FieldMap("quantity", "quantity", "number"),
        FieldMap("amount", "amount", "money"),
    )
)


@dataclass(frozen=True)
class ActVoucher:
    entity: str
    voucher_type: int
    reftype: int
    record: RecordMap
    extension: str | None = None


# The money of a proposal's header (§2.6 request; discount_type: §2.6, sa_order's key fields). Every amount
# is a pair: ``_oc`` in the order's currency, plain in VND; ``amis/money.py`` makes them add up.
PROPOSAL_MONEY = (
    FieldMap("customer_name", "account_object_name", source="CODE"),
    FieldMap("branch_id", "branch_id", "text", source="CODE", note="LIENTHONG_ACCT_BRANCH_ID; absent: ACT's default"),
    FieldMap("currency", "currency_id", source="CODE"),
    FieldMap("exchange_rate", "exchange_rate", "money", source="CODE"),
    FieldMap("discount_type", "discount_type", values=DISCOUNT_TYPES, source="CODE"),
    FieldMap("sale_amount", "total_sale_amount", "money", source="CODE"),
    FieldMap("sale_amount_oc", "total_sale_amount_oc", "money", source="CODE"),
    FieldMap("discount_amount", "total_discount_amount", "money", source="CODE"),
    FieldMap("discount_amount_oc", "total_discount_amount_oc", "money", source="CODE"),
    FieldMap("vat_amount", "total_vat_amount", "money", source="CODE"),
    FieldMap("vat_amount_oc", "total_vat_amount_oc", "money", source="CODE"),
    FieldMap("total_amount", "total_amount", "money"),
    FieldMap("total_amount_oc", "total_amount_oc", "money", source="CODE"),
)


def _order_fields(status: dict[str, int]) -> tuple[FieldMap, ...]:
    return (
        FieldMap("id", "refid", "text", note="= org_refid: proposals are saved with is_get_new_id false"),
        FieldMap("code", "refno"),
        FieldMap("crm_id", "crm_id", "text", source="CODE"),
        FieldMap("customer_code", "account_object_code"),
        FieldMap("lines", "detail", "lines", lines=ORDER_DETAIL),
        *PROPOSAL_MONEY,
        # A proposal is the "proposed" state itself: written as 0 (not recorded), never read back as proposed.
        FieldMap(
            "revenue_status", "revenue_status", values=REVENUE_STATUS, write_values={"proposed": 0}, source="CODE"
        ),
        FieldMap("status", "status", values=status, source="CODE"),
        FieldMap("delivery_status", "delivered_status", values=DELIVERED_STATUS, source="CODE"),
        FieldMap("is_invoiced", "is_invoiced", source="CODE"),
        FieldMap("delivery_deadline", "delivery_date", source="CODE"),
        # sa_order has due_day (a number of days), not due_date (§2.6 names it for sa_voucher only)
        FieldMap("payment_deadline", "due_date", source="EXT"),
    )


VOUCHERS: dict[str, ActVoucher] = {
    "sale_order": ActVoucher("sale_order", 20, 3520, RecordMap(fields=_order_fields(ORDER_STATUS))),
    "contract": ActVoucher(
        "contract",
        9001,
        9001,
        RecordMap(
            fields=(
                *_order_fields(CONTRACT_STATUS),
                FieldMap("revenue_entries", "revenue_entries", source="EXT"),
            ),
            passthrough=True,
        ),
        extension="no sales-contract voucher_type is public; the sandbox takes contracts as voucher_type 9001",
    ),
    "quote": ActVoucher(
        "quote",
        9002,
        9002,
        RecordMap(
            fields=(
                FieldMap("id", "refid", "text"),
                FieldMap("code", "refno"),
                FieldMap("crm_id", "crm_id", "text", source="EXT"),
                FieldMap("customer_code", "account_object_code"),
                FieldMap("lines", "detail", "lines", lines=ORDER_DETAIL),
                *PROPOSAL_MONEY,
            ),
            passthrough=True,
        ),
        extension="no quote voucher_type is public (sa_order only has quote_refid); the sandbox takes quotes as "
        "voucher_type 9002",
    ),
    "sales_voucher": ActVoucher(
        "sales_voucher",
        13,
        3530,
        RecordMap(
            fields=(
                FieldMap("id", "refid", "text"),
                FieldMap("code", "refno"),
                FieldMap("order_id", "sa_order_refid", "text", source="INF", note="the order the lines deliver"),
                FieldMap("lines", "detail", "lines", lines=DELIVERY_DETAIL),
                FieldMap("invoice_no", "inv_no", source="INF"),
                FieldMap("invoice_date", "inv_date", source="INF"),
                FieldMap("einvoice_published", "is_einvoice_published", source="EXT"),
            )
        ),
    ),
    "receipt": ActVoucher(
        "receipt",
        5,
        1010,
        RecordMap(
            fields=(
                FieldMap("id", "refid", "text"),
                FieldMap("code", "refno"),
                FieldMap("order_id", "sa_order_refid", "text", source="INF", note="the order the money is for"),
                FieldMap("amount", "total_amount", "money"),
            )
        ),
    ),
    "invoice": ActVoucher(
        "invoice",
        11,
        3560,
        RecordMap(
            fields=(
                FieldMap("id", "refid", "text"),
                FieldMap("crm_id", "crm_id", "text", source="EXT"),
                FieldMap("status", "issue_status", source="EXT"),
                FieldMap("reason", "issue_reason", source="EXT"),
                FieldMap("invoice_date", "inv_date", source="INF"),
                FieldMap("invoice_no", "inv_no", source="INF"),
                FieldMap("lookup_code", "transaction_id", source="EXT"),
                FieldMap("send_status", "send_status", source="EXT"),
                FieldMap("customer_received", "customer_received", source="EXT"),
            ),
            passthrough=True,
        ),
        extension="sa_invoice (voucher_type 11) can be proposed, but no callback reports an issuance proposal's "
        "approval, refusal or issue: the sandbox reports them as data_type 22 with issue_status",
    ),
}

# voucher_type -> entity, for callbacks (ba_deposit, a receipt into the bank, is a receipt too)
ENTITY_OF_VOUCHER_TYPE: dict[int, str] = {v.voucher_type: v.entity for v in VOUCHERS.values()} | {1: "receipt"}


# --- the reference's field names, per request kind ---------------------------------------------------
# What amis-apis.md Part 2 names for each request body the ACT client sends, copied as written there
# (patterns such as ``employee_*`` as the reference writes them; ``_oc`` twins are allowed by
# ``amis.mapping.in_reference``). A kind is ("acct", <function>) for a body's top level, ("acct",
# "save_dictionary", <dictionary_type>) for a dictionary item, ("acct", "save", <voucher_type>) for a
# voucher and ("acct", "save", <voucher_type>, <field>) for the objects inside one of its fields. With
# LIENTHONG_CONNECTOR_EXTENSIONS off every field the connector sends is one of these: a test holds it.

_ACCOUNT_OBJECT_READ = frozenset(  # §2.5 "Fields of read records", account object (data_type 1)
    {
        "dictionary_type",
        "account_object_id",
        "account_object_code",
        "account_object_name",
        "account_object_type",
        "is_customer",
        "is_vendor",
        "is_employee",
        "inactive",
        "address",
        "district",
        "ward_or_commune",
        "province_or_city",
        "country",
        "company_tax_code",
        "tel",
        "mobile",
        "email_address",
        "contact_name",
        "contact_mobile",
        "branch_id",
        "organization_unit_id",
        "payment_term_id",
        "maximize_debt_amount",
        "account_object_group_*_list",
        "state",
        "created_date",
        "created_by",
        "modified_date",
        "modified_by",
        "crm_id",
        "crm_group_id",
        "amis_platform_id",
    }
)
_VOUCHER_HEADER = frozenset(  # §2.6 Request (the example's voucher), Identity, Linking documents
    {
        "voucher_type",
        "org_refid",
        "org_refno",
        "org_reftype",
        "org_reftype_name",
        "reftype",
        "refdate",
        "posted_date",
        "branch_id",
        "account_object_id",
        "account_object_code",
        "account_object_name",
        "currency_id",
        "exchange_rate",
        "total_sale_amount_oc",
        "total_sale_amount",
        "total_discount_amount_oc",
        "total_discount_amount",
        "total_vat_amount_oc",
        "total_vat_amount",
        "total_amount_oc",
        "total_amount",
        "journal_memo",
        "detail",
        "is_get_new_id",
        "refid",
        "reference",
    }
)
_VOUCHER_DETAIL = frozenset(  # §2.6 Request (the example's detail), Identity (ref_detail_id), Linking (line links)
    {
        "inventory_item_id",
        "inventory_item_code",
        "quantity",
        "unit_price",
        "amount_oc",
        "amount",
        "vat_rate",
        "vat_amount",
        "debit_account",
        "credit_account",
        "stock_code",
        "sort_order",
        "ref_detail_id",
        "pu_order_refid",
        "pu_order_ref_detail_id",
    }
)
_REFERENCE_LINK = ("§2.6 Linking documents", frozenset({"org_refer_refid", "org_refer_refno", "org_refer_reftype"}))

REFERENCE_FIELDS: dict[tuple[str | int, ...], tuple[str, frozenset[str]]] = {
    ("acct", "connect"): ("§2.2", frozenset({"app_id", "access_code", "org_company_code"})),
    ("acct", "save_dictionary"): (
        "§2.5 save_dictionary request",
        frozenset({"app_id", "org_company_code", "dictionary"}),
    ),
    ("acct", "save_dictionary", 1): ("§2.5 save_dictionary request; Fields of read records", _ACCOUNT_OBJECT_READ),
    ("acct", "save_dictionary", 3): (
        "§2.5 Item payload (type 3)",
        frozenset(
            {
                "dictionary_type",  # "dictionary_type sits inside each item"
                "inventory_item_id",
                "inventory_item_code",
                "inventory_item_name",
                "inventory_item_type",
                "unit_name",
                "unit_price",
                "sale_price1",
                "inventory_account",
                "cogs_account",
                "sale_account",
                "branch_id",
                "inactive",
                "state",
            }
        ),
    ),
    ("acct", "save"): ("§2.6 Request", frozenset({"app_id", "org_company_code", "voucher", "dictionary"})),
    ("acct", "delete"): ("§2.4 delete", frozenset({"app_id", "org_company_code", "voucher"})),
    ("acct", "delete", "voucher"): ("§2.4 delete", frozenset({"voucher_type", "org_refid"})),
    ("acct", "save", 20): (
        "§2.6 Request; Key fields of sa_order; Identity; Linking documents",
        _VOUCHER_HEADER
        | {
            "crm_id",
            "account_object_address",
            "account_object_tax_code",
            "delivered_status",
            "delivery_date",
            "discount_type",
            "due_day",
            "employee_*",
            "is_invoiced",
            "payment_term_*",
            "quote_refid",
            "refno",
            "revenue_status",
            "shipping_address",
            "status",
            "total_*",
            "total_*_oc",
            "total_receipted_amount",
            "total_invoice_amount",
        },
    ),
    ("acct", "save", 13): (
        "§2.6 Request; Key fields of sa_voucher; Identity; Linking documents",
        _VOUCHER_HEADER
        | {
            "is_sale_with_outward",
            "in_outward",
            "include_invoice",
            "sa_invoice",
            "is_paid",
            "paid_type",
            "outward_exported_status",
            "payer",
            "due_date",
            "payment_term_*",
            *(f"custom_field{n}" for n in range(1, 11)),
        },
    ),
    ("acct", "save", 5): (
        "§2.6 Request; ca_receipt / ba_deposit; Identity; Linking documents",
        _VOUCHER_HEADER | {"reason_type_id", "account_object_*"},
    ),
    **{
        ("acct", "save", t, "detail"): ("§2.6 Request (detail); Identity; Linking documents", _VOUCHER_DETAIL)
        for t in (20, 13, 5)
    },
    **{("acct", "save", t, "reference"): _REFERENCE_LINK for t in (20, 13, 5)},
}
# reftypes of the documents a voucher's ``reference`` header can name as its order: sa_order (3520),
# and the sandbox's contracts (9001, an extension)
ORDER_REFTYPES = {VOUCHERS["sale_order"].reftype, VOUCHERS["contract"].reftype}


def order_of(voucher: dict[str, Any]) -> str | None:
    """The order a sales voucher or receipt (as a callback carries it) is for. How ACT links them is not
    settled (§2.6): a top-level ``sa_order_refid`` (as MISA's demo model has it), the documented
    ``reference`` header (``org_refer_refid`` with ``org_refer_reftype`` 3520 = sa_order; one object or
    a list of them), or ``sa_order_refid`` on the lines (as ``pu_order_refid`` on purchase lines).
    Any of them names it; a reference of another reftype (an invoice, a quote) does not."""
    top = voucher.get("sa_order_refid")
    if top:
        return str(top)
    references = voucher.get("reference")
    for ref in references if isinstance(references, list) else [references]:
        if isinstance(ref, dict) and ref.get("org_refer_refid"):
            reftype = ref.get("org_refer_reftype")
            if reftype in (None, "") or str(reftype) in {str(t) for t in ORDER_REFTYPES}:
                return str(ref["org_refer_refid"])
    for line in voucher.get("detail") or []:
        if isinstance(line, dict) and line.get("sa_order_refid"):
            return str(line["sa_order_refid"])
    return None


def to_acct(entity: str, record: dict) -> dict:
    spec = DICTIONARIES.get(entity)
    return (spec.record if spec else VOUCHERS[entity].record).to_wire(record, entity)


def from_acct(entity: str, record: dict) -> dict:
    spec = DICTIONARIES.get(entity)
    return (spec.record if spec else VOUCHERS[entity].record).from_wire(record)


def record_map(entity: str) -> RecordMap:
    spec = DICTIONARIES.get(entity)
    return spec.record if spec else VOUCHERS[entity].record
