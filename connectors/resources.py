"""Where each entity lives in each system's API: resource path -> canonical entity.

The connectors' API client builds its URLs from these; the sandboxes serve the same paths, so
the client never depends on a sandbox (a sandbox may import this, never the reverse).
"""

from __future__ import annotations

CRM_RESOURCES = {
    "Customers": "customer",
    "Products": "product",
    "ProductCategories": "product_category",
    "Quotes": "quote",
    "SaleOrders": "sale_order",
    "Invoices": "invoice",
    "PricePolicies": "price_policy",
}
ACCT_RESOURCES = {
    "dictionary/customers": "customer",
    "dictionary/products": "product",
    "dictionary/product_categories": "product_category",
    "dictionary/price_policies": "price_policy",
    "voucher/quotes": "quote",
    "voucher/sale_orders": "sale_order",
    "voucher/contracts": "contract",
    "voucher/sales_vouchers": "sales_voucher",
    "voucher/receipts": "receipt",
    "voucher/invoices": "invoice",
}

CRM_BASE = "/api/v2/"
ACCT_BASE = "/api/"
CRM_PATHS = {entity: CRM_BASE + resource for resource, entity in CRM_RESOURCES.items()}
ACCT_PATHS = {entity: ACCT_BASE + resource for resource, entity in ACCT_RESOURCES.items()}
