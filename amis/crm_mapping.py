"""AMIS CRM Open API v2 <-> the contract: one table per resource, as data.

Field names and labels are the public API's (``amis-apis.md`` Part 1: snake_case fields, numeric
ids, Vietnamese display labels for pick-lists); ``source`` says how certain each name is. Resources
marked ``extension`` are not in the public API (quotes, invoice requests, price policies, product
categories as a resource): only the sandbox serves them, and ``docs/amis-gaps.md`` says what a live
deployment needs instead. Fields with ``source="EXT"`` are the same for single fields.
"""

from __future__ import annotations

from dataclasses import dataclass

from amis.mapping import FieldMap, RecordMap

# --- label vocabularies: canonical value -> CRM's display label (amis-apis.md §1.6) -----------------

REVENUE_STATUS = {"draft": "Bản nháp", "proposed": "Đề nghị ghi", "recorded": "Đã ghi", "rejected": "Từ chối ghi"}
ORDER_STATUS = {
    "not_started": "Chưa thực hiện",
    "in_progress": "Đang thực hiện",
    "completed": "Đã thực hiện",
    "cancelled": "Đã hủy bỏ",
    "fully_delivered": "Đã giao đủ hàng",
}
DELIVERY_STATUS = {"not_delivered": "Chưa giao hàng", "delivering": "Đang giao hàng", "delivered": "Đã giao hàng"}
PAY_STATUS = {"unpaid": "Chưa thanh toán", "paid": "Đã thanh toán", "partially_paid": "Đã thanh toán một phần"}
INVOICING_STATUS = {"not_invoiced": False, "invoiced": True}
# Invoice requests are an extension; their labels are the sandbox's (the CRM screen's words).
INVOICE_STATUS = {
    "draft": "Bản nháp",
    "proposed": "Đề nghị xuất",
    "approved": "Đã duyệt",
    "rejected": "Từ chối",
    "issued": "Đã xuất",
    "issue_refused": "Từ chối xuất hóa đơn",
    "cancelled": "Đã hủy bỏ",
}

ORDER_LINE = RecordMap(
    fields=(
        FieldMap("line_id", "id", "id", source="INF", note="lines read back carry their row id"),
        FieldMap("product_code", "product_code"),
        FieldMap("quantity", "amount", "number", note="CRM calls the quantity 'amount'"),
        FieldMap("unit_price", "price", "money"),
        FieldMap("amount", "to_currency", "money", note="price × quantity before discount and tax"),
        # Money of the line (amis-apis.md §1.6, "Line"): plain figures are VND, ``_oc`` ones in the order's
        # currency (``to_currency_oc`` = price × quantity); ``amis/money.py`` computes a proposal from them.
        FieldMap("amount_oc", "to_currency_oc", "money"),
        FieldMap("discount_rate", "discount_percent", "percent", note="read as a number or a text like '5%'"),
        FieldMap("discount_amount", "discount", "money"),
        FieldMap("discount_amount_oc", "discount_oc", "money"),
        FieldMap("vat_rate", "tax_percent", "percent", note="text, e.g. '8%'"),
        FieldMap("vat_amount", "tax", "money"),
        FieldMap("vat_amount_oc", "tax_oc", "money"),
        FieldMap("total_amount", "total", "money", note="amount − discount + VAT"),
        FieldMap("total_amount_oc", "total_oc", "money"),
    )
)


# "Custom fields are custom_field<N>" (amis-apis.md §1.6): read and written under their own names.
CUSTOM_FIELDS = "custom_field*"


@dataclass(frozen=True)
class CrmResource:
    entity: str  # the contract's entity
    resource: str  # the path segment: /api/v2/<resource>
    code_field: str  # the business code's field (lookups by code)
    record: RecordMap
    extension: str | None = None  # why the public API does not have it; None for a documented resource


RESOURCES: dict[str, CrmResource] = {
    "customer": CrmResource(
        "customer",
        "Customers",
        "account_number",
        RecordMap(
            custom=CUSTOM_FIELDS,
            fields=(
                FieldMap("id", "id", "id"),
                FieldMap("code", "account_number"),
                FieldMap("name", "account_name"),
                FieldMap("tax_code", "tax_code"),
                FieldMap("address", "billing_address", source="INF", note="billing_* address fields; the street line"),
                FieldMap("phone", "office_tel"),
                FieldMap("email", "office_email"),
                FieldMap("is_personal", "is_personal"),
            ),
        ),
    ),
    "product": CrmResource(
        "product",
        "Products",
        "product_code",
        RecordMap(
            custom=CUSTOM_FIELDS,
            fields=(
                FieldMap("id", "id", "id"),
                FieldMap("code", "product_code"),
                FieldMap("name", "product_name"),
                FieldMap("category_code", "product_category", note="a text field; no category resource"),
                FieldMap("unit", "usage_unit"),
                FieldMap("unit_price", "unit_price", "money"),
                FieldMap("vat_rate", "tax", "percent", source="OBS", note="VAT as text, e.g. '10%'"),
            ),
        ),
    ),
    "sale_order": CrmResource(
        "sale_order",
        "SaleOrders",
        "sale_order_no",
        RecordMap(
            custom=CUSTOM_FIELDS,
            fields=(
                FieldMap("id", "id", "id"),
                FieldMap("code", "sale_order_no"),
                FieldMap("customer_code", "account_code", source="OBS"),
                FieldMap("customer_name", "account_name"),
                FieldMap("lines", "sale_order_product_mappings", "lines", lines=ORDER_LINE),
                FieldMap("total_amount", "sale_order_amount", "money"),
                # the order's currency and its summaries (§1.6 header; the ``*_oc`` twins: same section)
                FieldMap("currency", "currency_type", note="VND, USD, EUR, …"),
                FieldMap("exchange_rate", "exchange_rate", "money"),
                FieldMap("total_amount_oc", "sale_order_amount_oc", "money", source="INF"),
                FieldMap("sale_amount", "to_currency_summary", "money"),
                FieldMap("sale_amount_oc", "to_currency_summary_oc", "money", source="INF"),
                FieldMap("discount_amount", "discount_summary", "money"),
                FieldMap("discount_amount_oc", "discount_summary_oc", "money", source="INF"),
                FieldMap("vat_amount", "tax_summary", "money"),
                FieldMap("vat_amount_oc", "tax_summary_oc", "money", source="INF"),
                FieldMap("revenue_status", "revenue_status", values=REVENUE_STATUS),
                FieldMap("status", "status", values=ORDER_STATUS),
                FieldMap("delivery_status", "delivery_status", values=DELIVERY_STATUS),
                FieldMap("pay_status", "pay_status", values=PAY_STATUS),
                FieldMap("invoicing_status", "is_invoiced", values=INVOICING_STATUS),
                FieldMap("invoiced_amount", "invoiced_amount", "money"),
                FieldMap("invoiced_date", "invoice_date"),
                FieldMap("receipted_amount", "total_receipted_amount", "money"),
                FieldMap("remaining_receivable", "balance_receipt_amount", "money"),
                FieldMap("delivery_deadline", "delivery_date", source="INF"),
                FieldMap("payment_deadline", "due_date", source="INF"),
                FieldMap(
                    "delivered_quantities", "delivered_quantities", source="EXT", note="no per-line delivered field"
                ),
                FieldMap("revenue_entries", "revenue_entries", source="EXT", note="no revenue-recognition table"),
                FieldMap("receipts", "receipts", source="EXT", note="no receipt list on orders"),
            ),
            # CT-9 writes the acct contract's is_invoiced: the same CRM field as invoicing_status.
            aliases=(FieldMap("is_invoiced", "is_invoiced"),),
        ),
    ),
    "product_category": CrmResource(
        "product_category",
        "ProductCategories",
        "product_category_code",
        RecordMap(
            fields=(
                FieldMap("id", "id", "id"),
                FieldMap("code", "product_category_code", source="EXT"),
                FieldMap("name", "product_category_name", source="EXT"),
                FieldMap("parent_code", "parent_code", source="EXT"),
            ),
            passthrough=True,
        ),
        extension="product categories are only a text field of Products (product_category); no resource",
    ),
    "quote": CrmResource(
        "quote",
        "Quotes",
        "quote_code",
        RecordMap(
            fields=(
                FieldMap("id", "id", "id"),
                FieldMap("code", "quote_code", source="EXT"),
                FieldMap("customer_code", "account_code", source="EXT"),
                FieldMap("customer_name", "account_name", source="EXT"),
                FieldMap("lines", "quote_product_mappings", "lines", lines=ORDER_LINE, source="EXT"),
                FieldMap("total_amount", "total_summary", "money", source="EXT"),
                FieldMap("currency", "currency_type", source="EXT"),
                FieldMap("exchange_rate", "exchange_rate", "money", source="EXT"),
            ),
            passthrough=True,
        ),
        extension="quotes (Báo giá) have no public endpoint",
    ),
    "invoice": CrmResource(
        "invoice",
        "InvoiceRequests",
        "invoice_request_code",
        RecordMap(
            custom=CUSTOM_FIELDS,
            fields=(
                FieldMap("id", "id", "id"),
                FieldMap("code", "invoice_request_code", source="EXT"),
                FieldMap("order_code", "sale_order_no", source="EXT"),
                FieldMap("status", "status", values=INVOICE_STATUS, source="EXT"),
                FieldMap("amount", "amount", "money", source="EXT"),
                FieldMap("description", "description", source="EXT"),
            ),
            passthrough=True,
        ),
        extension="invoice requests (Đề nghị xuất hóa đơn) have no public endpoint",
    ),
    "price_policy": CrmResource(
        "price_policy",
        "PricePolicies",
        "price_policy_code",
        RecordMap(
            fields=(
                FieldMap("id", "id", "id"),
                FieldMap("code", "price_policy_code", source="EXT"),
                FieldMap("name", "price_policy_name", source="EXT"),
            ),
            passthrough=True,
        ),
        extension="price policies have no public endpoint",
    ),
}

# The documented resources a capture service polls, in this order (extensions only against the sandbox).
DOCUMENTED = [r.entity for r in RESOURCES.values() if r.extension is None]


# --- the reference's field names, per request kind ---------------------------------------------------
# What amis-apis.md Part 1 names for each request body the CRM client sends, copied as written there
# (patterns such as ``billing_*`` as the reference writes them; ``_oc`` twins are allowed by
# ``amis.mapping.in_reference``). A kind is ("crm", <path segment>) for the items of a write, or
# ("crm", <resource>, <field>) for the objects inside one field (order lines). With
# LIENTHONG_CONNECTOR_EXTENSIONS off every field the connector sends is one of these: a test holds it.

# "system fields as above" (§1.6 Customers' last row), which the other resources refer to; "Custom
# fields are custom_field<N>"; ``id`` is how PUT names the record (§1.3).
_SYSTEM = frozenset(
    {
        "id",
        "owner_name",
        "organization_unit_name",
        "created_by",
        "created_date",
        "modified_by",
        "modified_date",
        "inactive",
        "is_public",
        "form_layout",
        "related_users",
        "custom_field*",
    }
)

REFERENCE_FIELDS: dict[tuple[str, ...], tuple[str, frozenset[str]]] = {
    ("crm", "Account"): ("§1.2", frozenset({"client_id", "client_secret"})),
    ("crm", "Customers"): (
        "§1.6 Customers",
        _SYSTEM
        | {
            "account_number",
            "account_code",
            "account_name",
            "account_short_name",
            "tax_code",
            "office_tel",
            "office_email",
            "website",
            "fax",
            "account_type",
            "business_type",
            "sector_name",
            "industry",
            "lead_source",
            "parent_account_name",
            "is_personal",
            "billing_*",
            "shipping_*",
            "bank_account",
            "bank_name",
            "number_of_days_owed",
            "debt",
            "debt_limit",
            "customer_since_date",
            "celebrate_date",
            "purchase_date_recent",
            "total_score",
            "is_distributor",
        },
    ),
    ("crm", "Contacts"): (
        "§1.6 Contacts",
        _SYSTEM
        | {
            "contact_code",
            "salutation",
            "first_name",
            "last_name",
            "contact_name",
            "title",
            "department",
            "account_name",
            "account_code",
            "mobile",
            "office_tel",
            "other_phone",
            "office_email",
            "email",
            "zalo",
            "facebook",
            "mailing_*",
            "shipping_*",
            "date_of_birth",
            "gender",
            "married_status",
            "bank_account",
            "bank_name",
            "email_opt_out",
            "phone_opt_out",
            "lead_source",
            "customer_since_date",
        },
    ),
    ("crm", "Products"): (
        "§1.6 Products",
        _SYSTEM
        | {
            "product_code",
            "product_name",
            "product_category",
            "usage_unit",
            "product_properties",
            "unit_price",
            "unit_price1",
            "unit_price2",
            "unit_price_fixed",
            "purchased_price",
            "unit_cost",
            "tax",
            "price_after_tax",
            "is_use_tax",
            "default_stock",
            "sale_description",
            "description",
            "is_follow_serial_number",
            "is_set_product",
            "warranty_period",
            "warranty_description",
            "source",
            "avatar",
            "inactive",
        },
    ),
    ("crm", "SaleOrders"): (
        "§1.6 SaleOrders (header and status fields)",
        _SYSTEM
        | {
            "sale_order_no",
            "sale_order_name",
            "sale_order_date",
            "book_date",
            "due_date",
            "deadline_date",
            "delivery_date",
            "paid_date",
            "invoice_date",
            "account_name",
            "account_code",
            "contact_name",
            "contact_code",
            "quote_name",
            "quote_code",
            "opportunity_name",
            "campaign_name",
            "sale_order_type",
            "currency_type",
            "exchange_rate",
            "sale_order_amount",
            "total_summary",
            "tax_summary",
            "discount_summary",
            "to_currency_summary",
            "liquidate_amount",
            "total_receipted_amount",
            "balance_receipt_amount",
            "invoiced_amount",
            "un_invoiced_amount",
            "is_invoiced",
            "approved_status",
            "other_sys_order_code",
            "employee_code",
            "is_deleted",
            "billing_*",
            "shipping_*",
            "phone",
            "shipping_contact_name",
            "recorded_sale_users_name",
            "recorded_sale_organization_unit_name",
            "sale_order_product_mappings",
            "status",
            "revenue_status",
            "delivery_status",
            "pay_status",
        },
    ),
    ("crm", "SaleOrders", "sale_order_product_mappings"): (
        "§1.6 SaleOrders, line",
        frozenset(
            {
                "product_code",
                "description",
                "unit",
                "usage_unit",
                "amount",
                "price",
                "to_currency",
                "discount_percent",
                "discount",
                "tax_percent",
                "tax",
                "total",
                "price_after_tax",
                "price_after_discount",
                "to_currency_after_discount",
                "stock_name",
                "shipping_amount",
                "quantity_ordered",
                "is_promotion",
                "batch_number",
                "expire_date",
                "sort_order",
                "ratio",
                "operator",
            }
        ),
    ),
}


def to_crm(entity: str, record: dict) -> dict:
    return RESOURCES[entity].record.to_wire(record, entity)


def from_crm(entity: str, record: dict) -> dict:
    return RESOURCES[entity].record.from_wire(record)
