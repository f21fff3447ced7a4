"""The mapping tables: canonical contract records <-> each system's fields and labels, both ways.

Each entity of each system is sent through its table and back: what comes back is what went in.
Label vocabularies are one-to-one, the system's values are the documented ones (amis-apis.md), and
a value the system cannot say is refused with a message instead of being sent wrong.
"""

from __future__ import annotations

import pytest

from amis import acct_mapping, crm_mapping
from amis.mapping import MappingError, decimal_text

CRM_RECORDS = {
    "customer": {
        "id": "17",
        "code": "KH0001",
        "name": "Công ty ABC",
        "tax_code": "0101234567",
        "address": "1 Lê Lợi",
        "phone": "0901",
        "email": "a@b.vn",
        "is_personal": False,
    },
    "product": {
        "id": "5",
        "code": "SP01",
        "name": "Bút",
        "category_code": "VPP",
        "unit": "cái",
        "unit_price": "5000",
        "vat_rate": "8",
    },
    "sale_order": {
        "id": "9",
        "code": "DH0001",
        "customer_code": "KH0001",
        "lines": [{"line_id": "31", "product_code": "SP01", "quantity": 2.5, "unit_price": "5000", "amount": "12500"}],
        "total_amount": "12500",
        "revenue_status": "proposed",
        "status": "in_progress",
        "delivery_status": "delivering",
        "pay_status": "partially_paid",
        "invoicing_status": "invoiced",
        "invoiced_amount": "12500.5",
        "invoiced_date": "2026-11-28",
        "receipted_amount": "2000",
        "remaining_receivable": "10500",
        "delivery_deadline": "2026-12-01",
        "payment_deadline": "2026-12-31",
        "delivered_quantities": [{"line_id": "31", "delivered_quantity": "1"}],
        "revenue_entries": [{"id": "r1", "amount": "100", "status": "recorded"}],
        "receipts": [{"code": "PT1", "amount": "2000"}],
    },
    "product_category": {"id": "3", "code": "VPP", "name": "Văn phòng phẩm", "parent_code": None},
    "quote": {"id": "4", "code": "BG1", "customer_code": "KH0001", "lines": [], "total_amount": "0"},
    "invoice": {
        "id": "8",
        "code": "DN1",
        "order_code": "DH0001",
        "status": "issued",
        "amount": "10",
        "description": "x",
    },
    "price_policy": {
        "id": "2",
        "code": "CS1/VPP",
        "name": "Giá sỉ",
        "category_code": "VPP",
        "prices": [{"price": "1"}],
    },
}

ACCT_RECORDS = {
    "customer": {
        "id": "6f1c",
        "code": "KH0001",
        "name": "Công ty ABC",
        "tax_code": "0101",
        "address": "1 Lê Lợi",
        "phone": "0901",
        "email": "a@b.vn",
        "is_personal": True,
        "crm_id": "17",
    },
    "product": {
        "id": "a1",
        "code": "SP01",
        "name": "Bút",
        "unit": "cái",
        "unit_price": "5000",
        "category_code": "VPP",
        "vat_rate": "10",
    },
    "product_category": {"id": "c1", "code": "VPP", "name": "Văn phòng phẩm", "parent_code": "ROOT"},
    "price_policy": {"id": "p1", "code": "CS1", "name": "Giá sỉ", "category_codes": ["VPP"], "prices": []},
    "sale_order": {
        "id": "0b7e",
        "code": "DH0001",
        "crm_id": "9",
        "customer_code": "KH0001",
        "lines": [{"line_id": "31", "product_code": "SP01", "quantity": 2, "unit_price": "5000", "amount": "10000"}],
        "total_amount": "10000",
        "revenue_status": "recorded",
        "status": "completed",
        "delivery_status": "delivered",
        "is_invoiced": True,
        "delivery_deadline": "2026-12-01",
        "payment_deadline": "2026-12-31",
    },
    "contract": {
        "id": "ct1",
        "code": "HD1",
        "crm_id": "9",
        "status": "fully_delivered",
        "revenue_status": "not_recorded",
        "revenue_entries": [{"id": "e1", "amount": "5", "status": "recorded"}],
    },
    "quote": {"id": "q1", "code": "BG1", "customer_code": "KH0001", "lines": [], "total_amount": "0", "crm_id": "4"},
    "sales_voucher": {
        "id": "v1",
        "code": "XK0001",
        "order_id": "0b7e",
        "lines": [{"line_id": "31", "product_code": "SP01", "quantity": 1, "amount": "5000"}],
        "invoice_no": "0000123",
        "invoice_date": "2026-11-28",
        "einvoice_published": True,
    },
    "receipt": {"id": "r1", "code": "PT0001", "order_id": "0b7e", "amount": "2000"},
    "invoice": {
        "id": "i1",
        "crm_id": "8",
        "status": "issued",
        "reason": None,
        "invoice_date": "2026-11-28",
        "invoice_no": "0000123",
        "lookup_code": "ABC",
        "send_status": "sent",
        "customer_received": True,
    },
}


@pytest.mark.parametrize("entity", sorted(CRM_RECORDS))
def test_crm_records_come_back_as_they_went(entity):
    record = CRM_RECORDS[entity]
    wire = crm_mapping.to_crm(entity, record)
    assert crm_mapping.from_crm(entity, wire) == record
    assert crm_mapping.to_crm(entity, crm_mapping.from_crm(entity, wire)) == wire


@pytest.mark.parametrize("entity", sorted(ACCT_RECORDS))
def test_acct_records_come_back_as_they_went(entity):
    record = ACCT_RECORDS[entity]
    wire = acct_mapping.to_acct(entity, record)
    assert acct_mapping.from_acct(entity, wire) == record
    assert acct_mapping.to_acct(entity, acct_mapping.from_acct(entity, wire)) == wire


def test_every_entity_of_the_contract_has_a_table_in_its_system():
    from common.names import ENTITIES, System

    assert set(crm_mapping.RESOURCES) == set(ENTITIES[System.CRM])
    assert set(acct_mapping.DICTIONARIES) | set(acct_mapping.VOUCHERS) == set(ENTITIES[System.ACCT])


def test_crm_speaks_snake_case_labels_and_numbers():
    wire = crm_mapping.to_crm("sale_order", CRM_RECORDS["sale_order"])
    assert wire["id"] == 9 and wire["sale_order_no"] == "DH0001" and wire["account_code"] == "KH0001"
    assert wire["revenue_status"] == "Đề nghị ghi" and wire["status"] == "Đang thực hiện"
    assert wire["pay_status"] == "Đã thanh toán một phần" and wire["is_invoiced"] is True
    assert wire["sale_order_amount"] == 12500 and wire["invoiced_amount"] == 12500.5
    (line,) = wire["sale_order_product_mappings"]
    assert line == {"id": 31, "product_code": "SP01", "amount": 2.5, "price": 5000, "to_currency": 12500}
    assert crm_mapping.to_crm("product", CRM_RECORDS["product"])["tax"] == "8%"
    # a documented row as CRM lists it reads as the contract's values
    row = {
        "id": 77,
        "sale_order_no": "DH9",
        "revenue_status": "Từ chối ghi",
        "delivery_status": "Đã giao hàng",
        "sale_order_amount": 200000.0,
        "modified_date": "2025-07-16T00:00:00.000+07:00",
        "custom_field1": "x",
    }
    assert crm_mapping.from_crm("sale_order", row) == {
        "id": "77",
        "code": "DH9",
        "revenue_status": "rejected",
        "delivery_status": "delivered",
        "total_amount": "200000",
        # a custom field is the company's own: read under its name, for its field mappings (tenant settings)
        "custom_field1": "x",
    }
    # and written back under its name, as CRM's reference names them (custom_field<N>)
    assert crm_mapping.to_crm("customer", {"code": "KH1", "custom_field3": "Đại lý"}) == {
        "account_number": "KH1",
        "custom_field3": "Đại lý",
    }


def test_acct_speaks_its_codes_and_enums():
    wire = acct_mapping.to_acct("customer", ACCT_RECORDS["customer"])
    assert wire["account_object_code"] == "KH0001" and wire["account_object_type"] == 1
    assert wire["is_customer"] is True and wire["crm_id"] == "17"
    order = acct_mapping.to_acct("sale_order", {**ACCT_RECORDS["sale_order"], "revenue_status": "proposed"})
    assert order["revenue_status"] == 0 and order["status"] == 2 and order["delivered_status"] == 2
    assert order["detail"][0] == {
        "ref_detail_id": "31",
        "inventory_item_code": "SP01",
        "quantity": 2,
        "unit_price": 5000,
        "amount": 10000,
    }


def test_aliases_write_the_same_field_and_read_back_as_the_primary():
    wire = crm_mapping.to_crm("sale_order", {"is_invoiced": True})
    assert wire == {"is_invoiced": True}
    assert crm_mapping.from_crm("sale_order", wire) == {"invoicing_status": "invoiced"}


@pytest.mark.parametrize(
    "vocabulary",
    [
        crm_mapping.REVENUE_STATUS,
        crm_mapping.ORDER_STATUS,
        crm_mapping.DELIVERY_STATUS,
        crm_mapping.PAY_STATUS,
        crm_mapping.INVOICE_STATUS,
        acct_mapping.REVENUE_STATUS,
        acct_mapping.CONTRACT_STATUS,
        acct_mapping.DELIVERED_STATUS,
    ],
)
def test_vocabularies_are_one_to_one(vocabulary):
    assert len(set(vocabulary.values())) == len(vocabulary)


def test_the_crm_labels_are_the_documented_ones():
    assert set(crm_mapping.REVENUE_STATUS.values()) == {"Bản nháp", "Đề nghị ghi", "Đã ghi", "Từ chối ghi"}
    assert set(crm_mapping.DELIVERY_STATUS.values()) == {"Chưa giao hàng", "Đang giao hàng", "Đã giao hàng"}
    assert set(crm_mapping.PAY_STATUS.values()) == {"Chưa thanh toán", "Đã thanh toán", "Đã thanh toán một phần"}
    assert set(crm_mapping.ORDER_STATUS.values()) == {
        "Chưa thực hiện",
        "Đang thực hiện",
        "Đã thực hiện",
        "Đã hủy bỏ",
        "Đã giao đủ hàng",
    }


def test_what_a_system_cannot_say_is_refused_with_a_message():
    with pytest.raises(MappingError, match=r"sale_order\.revenue_status.*'approved'"):
        crm_mapping.to_crm("sale_order", {"revenue_status": "approved"})
    with pytest.raises(MappingError, match="total_amount"):
        crm_mapping.to_crm("sale_order", {"total_amount": "a lot"})
    # a label the table does not know is kept as the system said it, not lost
    assert crm_mapping.from_crm("sale_order", {"status": "Tạm dừng"}) == {"status": "Tạm dừng"}
    # fields outside a documented table are not sent; extension tables keep them
    assert crm_mapping.to_crm("customer", {"code": "KH1", "favourite_colour": "red"}) == {"account_number": "KH1"}
    assert crm_mapping.RESOURCES["customer"].record.unmapped({"code": "KH1", "favourite_colour": "red"}) == [
        "favourite_colour"
    ]


@pytest.mark.parametrize(
    ("given", "canonical"), [(200000, "200000"), (200000.0, "200000"), ("12.50", "12.5"), (0.1, "0.1"), ("-5", "-5")]
)
def test_money_is_a_canonical_decimal_string(given, canonical):
    assert decimal_text(given) == canonical
