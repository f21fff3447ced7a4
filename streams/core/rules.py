"""The sync matrix as data: one ``Rule`` per row of the matrix (``docs/matrix.md`` renders it).

A rule says: when *source system* reports *action* on *entity* (and the condition holds), do
*effect* on the *target* system's *target entity* with these fields. ``decide()`` in
``streams.core.decide`` is the one interpreter. ``load_rules()`` validates the table at start-up
and refuses to start with a message naming the faulty rule.
"""

from __future__ import annotations

from enum import StrEnum
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from streams.core.contract import ENTITIES, Action, Op, System

OrderTarget = Literal["sale_order", "contract"]
ORDER_TARGETS: tuple[OrderTarget, ...] = ("sale_order", "contract")


class Effect(StrEnum):
    NONE = "none"  # no command; the decision is audited
    WRITE = "write"  # one command to the target with the mapped fields
    PULL = "pull"  # CUS-10: upsert requested CRM customers into acct
    MERGE = "merge"  # CUS-5: the survivor's fields to its linked acct customer
    SPLIT_POLICY = "split_policy"  # PP-1: one CRM policy per category, stale copies deleted
    REVERT_POLICY = "revert_policy"  # PP-2: a CRM edit of a read-only copy is answered by the acct version
    CANCEL_REVENUE = "cancel_revenue"  # CT-7: a proposed negative line in the revenue-recognition table
    DERIVED = "derived"  # SO-9..SO-14, CT-11, CT-12: from aggregate tables (streams/tables)


# Actions every record has; one without a rule is audited as "none" (e.g. a category delete).
LIFECYCLE_ACTIONS = frozenset({Action.CREATE, Action.IMPORT, Action.CLONE, Action.UPDATE, Action.DELETE, Action.MERGE})
# Actions that feed the aggregates (SO-9..SO-14) rather than a rule of their own.
DERIVED_TRIGGERS: dict[tuple[System, str], frozenset[Action]] = {
    (System.ACCT, "sales_voucher"): frozenset({Action.ASSIGN_INVOICE_NO, Action.PUBLISH_EINVOICE}),
    # An issued e-invoice reports these too; its CRM request follows INV-6 (issue), not them.
    (System.ACCT, "invoice"): frozenset({Action.ASSIGN_INVOICE_NO, Action.PUBLISH_EINVOICE}),
}

# The values streams.core.aggregates.derive() computes for an order or contract.
DERIVED_VALUES = frozenset(
    {
        "delivered_quantities",
        "delivery_status",
        "receipted_amount",
        "remaining_receivable",
        "pay_status",
        "status",
        "invoicing_status",
        "invoiced_amount",
        "invoiced_date",
        "receipts",
    }
)


class Condition(BaseModel):
    """``record[field]`` must be one of ``values``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    field: str
    values: frozenset[str]

    def holds(self, record: dict[str, Any]) -> bool:
        return record.get(self.field) in self.values

    def describe(self) -> str:
        return f"{self.field} ∈ {{{', '.join(sorted(self.values))}}}"


class Dependency(BaseModel):
    """X-4: a record a document names that must exist in the target first, and the rule that sends it.

    ``code_field`` names the record by its business code: ``customer_code`` on the document, or
    ``lines[].product_code`` on each of its lines.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    entity: str
    code_field: str = Field(pattern=r"^([a-z_]+\[\]\.)?[a-z_]+$")
    rule: str

    def codes(self, record: dict[str, Any]) -> list[str]:
        """The codes this dependency names in ``record``, in order, without repeats."""
        list_name, _, field = self.code_field.rpartition("[].")
        items = record.get(list_name) if list_name else [record]
        codes: list[str] = []
        for item in items if isinstance(items, list) else ():
            code = item.get(field) if isinstance(item, dict) else None
            if code and str(code) not in codes:
                codes.append(str(code))
        return codes


class DerivedExtra(BaseModel):
    """Values a derived rule writes besides its own when a derived value says so (SO-11's reset)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    when: Condition
    fields: tuple[str, ...]


class WriteTarget(BaseModel):
    """Where a writing rule's commands go: the validated (target, target entity, op) of a rule."""

    model_config = ConfigDict(frozen=True)

    system: System
    entity: str
    op: Op


class Rule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^(CUS|CAT|PRD|PP|QUO|SO|CT|INV|X)-[0-9]+$")
    source: System
    entity: str
    actions: frozenset[Action]
    effect: Effect
    target: System | None = None
    target_entity: str | None = None
    op: Op | None = None
    order_target: OrderTarget | None = None  # SO-* only for sale_order tenants, CT-* for contract tenants
    when: Condition | None = None
    requires_link: bool = False  # CUS-3: only records already synced to the target
    only_fields: tuple[str, ...] | None = None  # CT-9 whitelist; None = every mapped field
    set_fields: dict[Action, dict[str, Any]] = Field(default_factory=dict)  # constants per action
    rename: dict[str, str] = Field(default_factory=dict)  # source field -> target field
    read_only: bool = False
    derives: tuple[str, ...] = ()  # DERIVED rules: the derived values (streams.core.aggregates) they write
    # DERIVED rules: more values written when a derived value says so (SO-11: the reset to 0 delivered)
    derives_also: tuple[DerivedExtra, ...] = ()
    # records of the document that must exist in the target first, sent by the named rules
    dependencies: tuple[Dependency, ...] = ()
    label_vi: str
    label_en: str

    @cached_property
    def writes(self) -> WriteTarget | None:
        """Where the rule writes; None for a rule with effect none. Validated by ``load_rules``."""
        if self.target is None or self.target_entity is None or self.op is None:
            return None
        return WriteTarget(system=self.target, entity=self.target_entity, op=self.op)

    def write_target(self) -> WriteTarget:
        """``writes`` of a rule that must write; a rule table that got here without one is a bug."""
        target = self.writes
        if target is None:
            raise RuleTableError(f"rule {self.id}: effect {self.effect.value} needs target, target_entity and op")
        return target

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        if self.entity not in ENTITIES[self.source]:
            raise ValueError(f"entity {self.entity!r} is not an entity of {self.source.value}")
        writes = self.effect is not Effect.NONE
        if self.effect is Effect.DERIVED:
            unknown_values = set(self.derives) - DERIVED_VALUES
            if not self.derives or unknown_values:
                raise ValueError(
                    f"a derived rule names the values it writes, from {sorted(DERIVED_VALUES)}; "
                    f"got {list(self.derives)}"
                )
        elif self.derives or self.derives_also:
            raise ValueError("only a derived rule has derives")
        for extra in self.derives_also:
            unknown_values = {extra.when.field, *extra.fields} - DERIVED_VALUES
            if unknown_values:
                raise ValueError(f"derives_also names values no rule derives: {sorted(unknown_values)}")
        if self.effect is Effect.DERIVED and self.when is not None and self.when.field not in self.derives:
            raise ValueError(
                f"a derived rule's condition reads one of its own values {list(self.derives)}, not {self.when.field!r}"
            )
        if self.dependencies:
            if self.effect is not Effect.WRITE or self.only_fields is not None or self.op is Op.DELETE:
                raise ValueError(
                    "only a rule that writes a whole document (effect write, every field) has dependencies"
                )
            for dependency in self.dependencies:
                if self.target is None or dependency.entity not in ENTITIES[self.target]:
                    raise ValueError(f"dependency {dependency.entity!r} is not an entity of the rule's target")
        if writes:
            if self.target is None or self.target_entity is None or self.op is None:
                raise ValueError(f"effect {self.effect.value} needs target, target_entity and op")
            if self.target_entity not in ENTITIES[self.target]:
                raise ValueError(f"target_entity {self.target_entity!r} is not an entity of {self.target.value}")
        elif self.effect is Effect.NONE and (self.target or self.op or self.set_fields or self.only_fields):
            raise ValueError("a rule with effect none writes nothing: no target, op, set_fields or only_fields")
        unknown = set(self.set_fields) - set(self.actions)
        if unknown:
            raise ValueError(f"set_fields for actions the rule does not take: {sorted(unknown)}")
        if not self.actions and self.effect is not Effect.DERIVED:
            raise ValueError("a rule needs at least one action")
        return self


def _rule(**kwargs: Any) -> dict[str, Any]:
    return kwargs


CRM, ACCT = System.CRM, System.ACCT

# a CRM document written whole into accounting sends its customer (as CUS-10 would) and its
# products (as PRD-1 would) first when accounting does not have them yet.
DOCUMENT_DEPENDENCIES = (
    Dependency(entity="customer", code_field="customer_code", rule="CUS-10"),
    Dependency(entity="product", code_field="lines[].product_code", rule="PRD-1"),
)

# The rows of the matrix, in the order of the original sync table (docs/matrix.md renders them).
RULE_TABLE: list[dict[str, Any]] = [
    # --- Customer (Khách hàng) ---------------------------------------------------------------
    _rule(
        id="CUS-1",
        source=CRM,
        entity="customer",
        actions={Action.CREATE},
        effect=Effect.NONE,
        label_vi="Thêm mới: không đồng bộ mà sử dụng chức năng lấy về trên Kế toán",
        label_en="create: not synced; available to accounting's pull (CUS-10)",
    ),
    _rule(
        id="CUS-2",
        source=CRM,
        entity="customer",
        actions={Action.IMPORT},
        effect=Effect.NONE,
        label_vi="Nhập khẩu: không đồng bộ mà sử dụng chức năng lấy về trên Kế toán",
        label_en="import: not synced; available to accounting's pull (CUS-10)",
    ),
    _rule(
        id="CUS-3",
        source=CRM,
        entity="customer",
        actions={Action.UPDATE},
        effect=Effect.WRITE,
        target=ACCT,
        target_entity="customer",
        op=Op.UPDATE,
        requires_link=True,
        label_vi="Sửa: đồng bộ tự động đối với khách hàng đã được đồng bộ sang Kế toán",
        label_en="update: update the linked acct customer, only if already linked",
    ),
    _rule(
        id="CUS-4",
        source=CRM,
        entity="customer",
        actions={Action.DELETE},
        effect=Effect.NONE,
        label_vi="Xóa: không đồng bộ",
        label_en="delete: none",
    ),
    _rule(
        id="CUS-5",
        source=CRM,
        entity="customer",
        actions={Action.MERGE},
        effect=Effect.MERGE,
        target=ACCT,
        target_entity="customer",
        op=Op.UPDATE,
        requires_link=True,
        label_vi="Gộp: cập nhật các trường tương ứng sang Kế toán",
        label_en="merge: the survivor's fields to its linked acct customer; absorbed records stay",
    ),
    _rule(
        id="CUS-6",
        source=ACCT,
        entity="customer",
        actions={Action.CREATE},
        effect=Effect.WRITE,
        target=CRM,
        target_entity="customer",
        op=Op.UPSERT,
        label_vi="Thêm mới: tự động đồng bộ sang CRM",
        label_en="create: create in CRM, link the two",
    ),
    _rule(
        id="CUS-7",
        source=ACCT,
        entity="customer",
        actions={Action.IMPORT},
        effect=Effect.WRITE,
        target=CRM,
        target_entity="customer",
        op=Op.UPSERT,
        label_vi="Nhập khẩu: tự động đồng bộ sang CRM",
        label_en="import: as CUS-6",
    ),
    _rule(
        id="CUS-8",
        source=ACCT,
        entity="customer",
        actions={Action.UPDATE},
        effect=Effect.WRITE,
        target=CRM,
        target_entity="customer",
        op=Op.UPSERT,
        label_vi="Sửa: tự động đồng bộ sang CRM",
        label_en="update: update the linked CRM customer",
    ),
    _rule(
        id="CUS-9",
        source=ACCT,
        entity="customer",
        actions={Action.DELETE},
        effect=Effect.NONE,
        label_vi="Xóa: không đồng bộ",
        label_en="delete: none",
    ),
    _rule(
        id="CUS-10",
        source=ACCT,
        entity="customer",
        actions={Action.PULL},
        effect=Effect.PULL,
        target=ACCT,
        target_entity="customer",
        op=Op.UPSERT,
        label_vi="Lấy về: Kế toán lấy khách hàng từ CRM",
        label_en="pull: upsert the requested (or all unlinked) CRM customers into acct, link them",
    ),
    # --- Product category and product -------------------------------------------------------
    _rule(
        id="CAT-1",
        source=CRM,
        entity="product_category",
        actions={Action.CREATE, Action.UPDATE},
        effect=Effect.WRITE,
        target=ACCT,
        target_entity="product_category",
        op=Op.UPSERT,
        label_vi="Loại hàng hóa – Thêm mới, Sửa: tự động đồng bộ",
        label_en="create, update: upsert in acct",
    ),
    _rule(
        id="CAT-2",
        source=ACCT,
        entity="product_category",
        actions={Action.CREATE, Action.UPDATE},
        effect=Effect.WRITE,
        target=CRM,
        target_entity="product_category",
        op=Op.UPSERT,
        label_vi="Loại hàng hóa – Thêm mới, Sửa (Kế toán): tự động đồng bộ",
        label_en="create, update: upsert in CRM",
    ),
    _rule(
        id="PRD-1",
        source=CRM,
        entity="product",
        actions={Action.CREATE, Action.IMPORT, Action.UPDATE},
        effect=Effect.WRITE,
        target=ACCT,
        target_entity="product",
        op=Op.UPSERT,
        label_vi="Hàng hóa – Thêm mới, Nhập khẩu, Sửa: tự động đồng bộ",
        label_en="create, import, update: upsert in acct",
    ),
    _rule(
        id="PRD-2",
        source=CRM,
        entity="product",
        actions={Action.DELETE, Action.MERGE},
        effect=Effect.NONE,
        label_vi="Hàng hóa – Xóa, Gộp: không đồng bộ",
        label_en="delete, merge: none",
    ),
    _rule(
        id="PRD-3",
        source=ACCT,
        entity="product",
        actions={Action.CREATE, Action.IMPORT, Action.UPDATE},
        effect=Effect.WRITE,
        target=CRM,
        target_entity="product",
        op=Op.UPSERT,
        label_vi="Hàng hóa – Thêm mới, Nhập khẩu, Sửa (Kế toán): tự động đồng bộ",
        label_en="create, import, update: upsert in CRM",
    ),
    _rule(
        id="PRD-4",
        source=ACCT,
        entity="product",
        actions={Action.DELETE, Action.MERGE},
        effect=Effect.NONE,
        label_vi="Hàng hóa – Xóa, Gộp (Kế toán): không đồng bộ",
        label_en="delete, merge: none",
    ),
    # --- Price policy --------------------------------------------------------------------------
    _rule(
        id="PP-1",
        source=ACCT,
        entity="price_policy",
        actions={Action.CREATE, Action.UPDATE},
        effect=Effect.SPLIT_POLICY,
        target=CRM,
        target_entity="price_policy",
        op=Op.UPSERT,
        read_only=True,
        label_vi="Chính sách giá – Thêm mới, Sửa: tự động đồng bộ sang CRM; nhiều phân loại hàng hóa thì tách "
        "nhiều chính sách giá",
        label_en="create, update: one read-only CRM policy per category (<policy code>/<category code>); "
        "dropped categories deleted",
    ),
    _rule(
        id="PP-2",
        source=CRM,
        entity="price_policy",
        actions={Action.UPDATE},
        effect=Effect.REVERT_POLICY,
        target=CRM,
        target_entity="price_policy",
        op=Op.UPSERT,
        read_only=True,
        label_vi="Chính sách giá đồng bộ từ Kế toán không được phép Sửa, Sửa nhanh",
        label_en="update of a copy from acct: re-send the acct version (conflict audited)",
    ),
    # --- Quote (Báo giá) -----------------------------------------------------------------------
    _rule(
        id="QUO-1",
        source=CRM,
        entity="quote",
        actions={Action.CREATE, Action.IMPORT, Action.UPDATE},
        effect=Effect.WRITE,
        target=ACCT,
        target_entity="quote",
        op=Op.UPSERT,
        dependencies=DOCUMENT_DEPENDENCIES,
        label_vi="Báo giá – Thêm mới, Nhập khẩu, Sửa: tự động đồng bộ",
        label_en="create, import, update: upsert in acct",
    ),
    _rule(
        id="QUO-2",
        source=CRM,
        entity="quote",
        actions={Action.DELETE},
        effect=Effect.NONE,
        label_vi="Báo giá – Xóa: không đồng bộ",
        label_en="delete: none",
    ),
    _rule(
        id="QUO-3",
        source=ACCT,
        entity="quote",
        actions={Action.CREATE, Action.UPDATE, Action.DELETE},
        effect=Effect.NONE,
        label_vi="Báo giá – Thêm mới, Sửa, Xóa (Kế toán): không ảnh hưởng đến CRM",
        label_en="create, update, delete: none (does not affect CRM)",
    ),
    # --- Order as an acct sales order (Đơn hàng – Đơn đặt hàng) ------------------------------
    _rule(
        id="SO-1",
        source=CRM,
        entity="sale_order",
        order_target="sale_order",
        actions={Action.CREATE, Action.CLONE, Action.IMPORT},
        effect=Effect.WRITE,
        target=ACCT,
        target_entity="sale_order",
        op=Op.CREATE,
        when=Condition(field="revenue_status", values=frozenset({"proposed"})),
        dependencies=DOCUMENT_DEPENDENCIES,
        label_vi="Thêm mới, Nhân bản, Nhập khẩu: tự động đồng bộ nếu tình trạng ghi doanh số = Đề nghị ghi",
        label_en="create, clone, import: create in acct if revenue_status = proposed",
    ),
    _rule(
        id="SO-2",
        source=CRM,
        entity="sale_order",
        order_target="sale_order",
        actions={Action.UPDATE},
        effect=Effect.WRITE,
        target=ACCT,
        target_entity="sale_order",
        op=Op.UPDATE,
        when=Condition(field="revenue_status", values=frozenset({"proposed", "recorded"})),
        dependencies=DOCUMENT_DEPENDENCIES,
        label_vi="Sửa: tự động đồng bộ nếu tình trạng ghi doanh số = Đề nghị ghi, Đã ghi",
        label_en="update: update in acct if revenue_status ∈ {proposed, recorded}",
    ),
    _rule(
        id="SO-3",
        source=CRM,
        entity="sale_order",
        order_target="sale_order",
        actions={Action.DELETE},
        effect=Effect.NONE,
        label_vi="Xóa: không đồng bộ",
        label_en="delete: none",
    ),
    _rule(
        id="SO-4",
        source=CRM,
        entity="sale_order",
        order_target="sale_order",
        actions={Action.PROPOSE_REVENUE},
        effect=Effect.WRITE,
        target=ACCT,
        target_entity="sale_order",
        op=Op.UPSERT,
        dependencies=DOCUMENT_DEPENDENCIES,
        label_vi="Đề nghị ghi doanh số: tự động đồng bộ",
        label_en="propose_revenue: upsert in acct",
    ),
    _rule(
        id="SO-5",
        source=CRM,
        entity="sale_order",
        order_target="sale_order",
        actions={Action.WITHDRAW_REVENUE},
        effect=Effect.NONE,
        label_vi="Thu hồi đề nghị doanh số: không xóa",
        label_en="withdraw_revenue: none (the acct sales order is not deleted)",
    ),
    _rule(
        id="SO-6",
        source=CRM,
        entity="sale_order",
        order_target="sale_order",
        actions={Action.RECORD_REVENUE, Action.REJECT_REVENUE},
        effect=Effect.WRITE,
        target=ACCT,
        target_entity="sale_order",
        op=Op.UPDATE,
        only_fields=(),
        set_fields={
            Action.RECORD_REVENUE: {"revenue_status": "recorded"},
            Action.REJECT_REVENUE: {"revenue_status": "not_recorded"},
        },
        label_vi="Ghi doanh số/Từ chối ghi doanh số: Kế toán là Đã ghi doanh số / Chưa ghi doanh số",
        label_en="record/reject_revenue: acct revenue_status := recorded / not_recorded",
    ),
    _rule(
        id="SO-7",
        source=ACCT,
        entity="sale_order",
        order_target="sale_order",
        actions={Action.CREATE, Action.UPDATE, Action.DELETE},
        effect=Effect.NONE,
        label_vi="Thêm mới, Xóa, Sửa (Kế toán): không đồng bộ",
        label_en="create, update, delete: none",
    ),
    _rule(
        id="SO-8",
        source=ACCT,
        entity="sale_order",
        order_target="sale_order",
        actions={Action.RECORD_REVENUE, Action.REJECT_REVENUE},
        effect=Effect.WRITE,
        target=CRM,
        target_entity="sale_order",
        op=Op.UPDATE,
        only_fields=(),
        set_fields={
            Action.RECORD_REVENUE: {"revenue_status": "recorded"},
            Action.REJECT_REVENUE: {"revenue_status": "rejected"},
        },
        label_vi="Ghi doanh số/Từ chối ghi doanh số (Kế toán): đồng bộ về tình trạng ghi doanh số của CRM",
        label_en="record/reject_revenue: CRM revenue_status := recorded / rejected",
    ),
    _rule(
        id="SO-9",
        source=ACCT,
        entity="sales_voucher",
        order_target="sale_order",
        actions=set(),
        effect=Effect.DERIVED,
        target=CRM,
        target_entity="sale_order",
        op=Op.UPDATE,
        derives=("delivered_quantities",),
        label_vi="Cập nhật số lượng giao: tự động cập nhật về CRM",
        label_en="delivered quantities: CRM delivered quantity per line := sum over live vouchers",
    ),
    _rule(
        id="SO-10",
        source=ACCT,
        entity="receipt",
        order_target="sale_order",
        actions=set(),
        effect=Effect.DERIVED,
        target=CRM,
        target_entity="sale_order",
        op=Op.UPDATE,
        derives=("receipted_amount", "remaining_receivable"),
        label_vi="Thông tin thanh toán: tự động cập nhật số còn phải thu",
        label_en="receipts: CRM receipted_amount, remaining_receivable := total − receipts",
    ),
    _rule(
        id="SO-11",
        source=ACCT,
        entity="sale_order",
        order_target="sale_order",
        actions=set(),
        effect=Effect.DERIVED,
        target=CRM,
        target_entity="sale_order",
        op=Op.UPDATE,
        derives=("status",),
        # CRM keeps its own status for an order that never had a sales voucher (status unset)
        when=Condition(field="status", values=frozenset({"completed", "in_progress", "not_started"})),
        derives_also=(
            DerivedExtra(
                when=Condition(field="status", values=frozenset({"not_started"})),
                fields=("delivered_quantities",),
            ),
        ),
        label_vi="Tình trạng: Hoàn thành khi tổng giá trị xuất hóa đơn = tổng thanh toán; xóa chứng từ bán hàng "
        "thì Chưa thực hiện và số lượng đã giao = 0",
        label_en="status: completed when invoiced total = order total; not_started and 0 delivered when "
        "vouchers are deleted",
    ),
    _rule(
        id="SO-12",
        source=ACCT,
        entity="sales_voucher",
        order_target="sale_order",
        actions=set(),
        effect=Effect.DERIVED,
        target=CRM,
        target_entity="sale_order",
        op=Op.UPDATE,
        derives=("invoicing_status", "invoiced_amount", "invoiced_date"),
        label_vi="Tình trạng xuất hóa đơn: khi cấp số hóa đơn hoặc phát hành hóa đơn điện tử",
        label_en="invoicing status: invoiced with amount and date",
    ),
    _rule(
        id="SO-13",
        source=ACCT,
        entity="sales_voucher",
        order_target="sale_order",
        actions=set(),
        effect=Effect.DERIVED,
        target=CRM,
        target_entity="sale_order",
        op=Op.UPDATE,
        derives=("delivery_status",),
        label_vi="Tình trạng giao hàng: Đã giao hàng khi tổng số lượng giao = tổng số lượng",
        label_en="delivery_status: delivered / delivering / not_delivered",
    ),
    _rule(
        id="SO-14",
        source=ACCT,
        entity="receipt",
        order_target="sale_order",
        actions=set(),
        effect=Effect.DERIVED,
        target=CRM,
        target_entity="sale_order",
        op=Op.UPDATE,
        derives=("pay_status",),
        label_vi="Tình trạng thanh toán: Đã thanh toán khi còn phải thu = 0",
        label_en="pay_status: paid / partially_paid / unpaid",
    ),
    # --- Order as an acct contract (Đơn hàng – Hợp đồng) -------------------------------------
    _rule(
        id="CT-1",
        source=CRM,
        entity="sale_order",
        order_target="contract",
        actions={Action.CREATE, Action.CLONE, Action.IMPORT},
        effect=Effect.WRITE,
        target=ACCT,
        target_entity="contract",
        op=Op.CREATE,
        when=Condition(field="revenue_status", values=frozenset({"proposed"})),
        dependencies=DOCUMENT_DEPENDENCIES,
        label_vi="Thêm mới: tự động đồng bộ nếu tình trạng ghi DS = Đề nghị ghi",
        label_en="create: create an acct contract if revenue_status = proposed",
    ),
    _rule(
        id="CT-2",
        source=CRM,
        entity="sale_order",
        order_target="contract",
        actions={Action.UPDATE},
        effect=Effect.WRITE,
        target=ACCT,
        target_entity="contract",
        op=Op.UPDATE,
        when=Condition(field="revenue_status", values=frozenset({"proposed", "recorded"})),
        dependencies=DOCUMENT_DEPENDENCIES,
        label_vi="Sửa: tự động đồng bộ nếu tình trạng ghi DS = Đề nghị ghi, Đã ghi",
        label_en="update: update the acct contract if revenue_status ∈ {proposed, recorded}",
    ),
    _rule(
        id="CT-3",
        source=CRM,
        entity="sale_order",
        order_target="contract",
        actions={Action.DELETE},
        effect=Effect.NONE,
        label_vi="Xóa: không đồng bộ",
        label_en="delete: none",
    ),
    _rule(
        id="CT-4",
        source=CRM,
        entity="sale_order",
        order_target="contract",
        actions={Action.PROPOSE_REVENUE},
        effect=Effect.WRITE,
        target=ACCT,
        target_entity="contract",
        op=Op.UPSERT,
        dependencies=DOCUMENT_DEPENDENCIES,
        label_vi="Đề nghị ghi doanh số: tự động đồng bộ",
        label_en="propose_revenue: upsert the acct contract",
    ),
    _rule(
        id="CT-5",
        source=CRM,
        entity="sale_order",
        order_target="contract",
        actions={Action.WITHDRAW_REVENUE},
        effect=Effect.WRITE,
        target=ACCT,
        target_entity="contract",
        op=Op.DELETE,
        only_fields=(),
        label_vi="Thu hồi đề nghị ghi doanh số: xóa hợp đồng trên Kế toán",
        label_en="withdraw_revenue: delete the acct contract",
    ),
    _rule(
        id="CT-6",
        source=CRM,
        entity="sale_order",
        order_target="contract",
        actions={Action.RECORD_REVENUE, Action.REJECT_REVENUE},
        effect=Effect.WRITE,
        target=ACCT,
        target_entity="contract",
        op=Op.UPDATE,
        only_fields=("revenue_entries",),
        set_fields={
            Action.RECORD_REVENUE: {"revenue_status": "recorded"},
            Action.REJECT_REVENUE: {"revenue_status": "not_recorded"},
        },
        label_vi="Ghi doanh số/Từ chối ghi doanh số: tình trạng trên Kế toán và bảng ghi nhận DS",
        label_en="record/reject_revenue: acct revenue_status := recorded / not_recorded, and the "
        "revenue-recognition table",
    ),
    _rule(
        id="CT-7",
        source=CRM,
        entity="sale_order",
        order_target="contract",
        actions={Action.PROPOSE_REVENUE_CANCEL},
        effect=Effect.CANCEL_REVENUE,
        target=ACCT,
        target_entity="contract",
        op=Op.UPDATE,
        label_vi="Đề nghị hủy doanh số: đồng bộ DS đề nghị lên Kế toán",
        label_en="propose_revenue_cancel: a proposed negative line in the acct revenue-recognition table",
    ),
    _rule(
        id="CT-8",
        source=ACCT,
        entity="contract",
        order_target="contract",
        actions={Action.CREATE, Action.DELETE},
        effect=Effect.NONE,
        label_vi="Thêm mới, Xóa (Kế toán): không đồng bộ",
        label_en="create, delete: none",
    ),
    _rule(
        id="CT-9",
        source=ACCT,
        entity="contract",
        order_target="contract",
        actions={Action.UPDATE},
        effect=Effect.WRITE,
        target=CRM,
        target_entity="sale_order",
        op=Op.UPDATE,
        only_fields=("status", "delivery_deadline", "payment_deadline", "is_invoiced", "delivery_status"),
        label_vi="Sửa: chỉ cập nhật Tình trạng hợp đồng, Hạn giao hàng, Hạn thanh toán, Đã xuất hóa đơn, "
        "Tình trạng giao hàng",
        label_en="update: CRM gets only status, delivery_deadline, payment_deadline, is_invoiced, delivery_status",
    ),
    _rule(
        id="CT-10",
        source=ACCT,
        entity="contract",
        order_target="contract",
        actions={Action.RECORD_REVENUE, Action.REJECT_REVENUE},
        effect=Effect.WRITE,
        target=CRM,
        target_entity="sale_order",
        op=Op.UPDATE,
        only_fields=("revenue_entries",),
        set_fields={
            Action.RECORD_REVENUE: {"revenue_status": "recorded"},
            Action.REJECT_REVENUE: {"revenue_status": "rejected"},
        },
        label_vi="Ghi doanh số/Từ chối ghi doanh số (Kế toán): tình trạng ghi doanh số và bảng ghi nhận DS của CRM",
        label_en="record/reject_revenue: CRM revenue_status and revenue-recognition table := acct's",
    ),
    _rule(
        id="CT-11",
        source=ACCT,
        entity="contract",
        order_target="contract",
        actions=set(),
        effect=Effect.DERIVED,
        target=CRM,
        target_entity="sale_order",
        op=Op.UPDATE,
        derives=("delivery_status", "delivered_quantities"),
        label_vi="Cập nhật Tình trạng giao hàng, Số lượng đã giao: Đã giao đủ hàng thì Đã giao hàng",
        label_en="delivery: CRM delivered when acct status is fully_delivered, else not_delivered",
    ),
    _rule(
        id="CT-12",
        source=ACCT,
        entity="contract",
        order_target="contract",
        actions=set(),
        effect=Effect.DERIVED,
        target=CRM,
        target_entity="sale_order",
        op=Op.UPDATE,
        derives=("receipted_amount", "remaining_receivable", "pay_status", "receipts"),
        label_vi="Cập nhật Thực thu, Số còn phải thu, Tình trạng thanh toán: còn phải thu = 0 thì Đã thanh toán",
        label_en="receipts: CRM receipted_amount, remaining_receivable; paid when remaining = 0",
    ),
    # --- Invoice (Hóa đơn) -----------------------------------------------------------------------
    _rule(
        id="INV-1",
        source=CRM,
        entity="invoice",
        actions={Action.CREATE, Action.UPDATE},
        effect=Effect.WRITE,
        target=ACCT,
        target_entity="invoice",
        op=Op.UPSERT,
        when=Condition(field="status", values=frozenset({"proposed"})),
        dependencies=DOCUMENT_DEPENDENCIES,
        label_vi="Thêm mới, Sửa: tự động đồng bộ nếu tình trạng = Đề nghị xuất",
        label_en="create, update: create/update the acct issuance proposal if status = proposed",
    ),
    _rule(
        id="INV-2",
        source=CRM,
        entity="invoice",
        actions={Action.DELETE},
        effect=Effect.NONE,
        label_vi="Xóa: không đồng bộ",
        label_en="delete: none",
    ),
    _rule(
        id="INV-3",
        source=CRM,
        entity="invoice",
        actions={Action.WITHDRAW_ISSUE},
        effect=Effect.WRITE,
        target=ACCT,
        target_entity="invoice",
        op=Op.DELETE,
        only_fields=(),
        label_vi="Thu hồi đề nghị xuất: xóa đề nghị xuất trên Kế toán",
        label_en="withdraw_issue: delete the acct issuance proposal",
    ),
    _rule(
        id="INV-4",
        source=ACCT,
        entity="invoice",
        actions={Action.APPROVE},
        effect=Effect.WRITE,
        target=CRM,
        target_entity="invoice",
        op=Op.UPDATE,
        only_fields=(),
        set_fields={Action.APPROVE: {"status": "approved"}},
        label_vi="Duyệt đề nghị: tình trạng trên CRM thành Duyệt đề nghị",
        label_en="approve: CRM status := approved",
    ),
    _rule(
        id="INV-5",
        source=ACCT,
        entity="invoice",
        actions={Action.REJECT},
        effect=Effect.WRITE,
        target=CRM,
        target_entity="invoice",
        op=Op.UPDATE,
        only_fields=("reason",),
        rename={"reason": "description"},
        set_fields={Action.REJECT: {"status": "rejected"}},
        label_vi="Từ chối đề nghị: tình trạng Từ chối; lý do vào Mô tả chi tiết",
        label_en="reject: CRM status := rejected, reason to description",
    ),
    _rule(
        id="INV-6",
        source=ACCT,
        entity="invoice",
        actions={Action.ISSUE},
        effect=Effect.WRITE,
        target=CRM,
        target_entity="invoice",
        op=Op.UPDATE,
        only_fields=("invoice_date", "invoice_no", "lookup_code", "send_status", "customer_received"),
        set_fields={Action.ISSUE: {"status": "issued"}},
        label_vi="Xuất hóa đơn: tình trạng Đã xuất; Ngày hóa đơn, Số hóa đơn, Mã tra cứu, TT gửi hóa đơn, "
        "KH đã nhận hóa đơn",
        label_en="issue: CRM status := issued with invoice_date, invoice_no, lookup_code, send_status, "
        "customer_received",
    ),
    _rule(
        id="INV-7",
        source=ACCT,
        entity="invoice",
        actions={Action.REFUSE_ISSUE},
        effect=Effect.WRITE,
        target=CRM,
        target_entity="invoice",
        op=Op.UPDATE,
        only_fields=("reason",),
        rename={"reason": "description"},
        set_fields={Action.REFUSE_ISSUE: {"status": "issue_refused"}},
        label_vi="Từ chối xuất hóa đơn: tình trạng Từ chối xuất hóa đơn; lý do vào Mô tả chi tiết",
        label_en="refuse_issue: CRM status := issue_refused, reason to description",
    ),
    _rule(
        id="INV-8",
        source=ACCT,
        entity="invoice",
        actions={Action.CANCEL},
        effect=Effect.WRITE,
        target=CRM,
        target_entity="invoice",
        op=Op.UPDATE,
        only_fields=("reason",),
        rename={"reason": "description"},
        set_fields={Action.CANCEL: {"status": "cancelled"}},
        label_vi="Hủy hóa đơn: tình trạng Hủy bỏ; lý do vào Mô tả chi tiết",
        label_en="cancel: CRM status := cancelled, reason to description",
    ),
]


class RuleTableError(ValueError):
    """The rule table is inconsistent; the message names the rule."""


class RuleBook:
    """The validated rule table, indexed once for lookup by (source, entity, action, order target)."""

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        self.rules = rules
        self._by_id = {rule.id: rule for rule in rules}
        self._actions: dict[tuple[System, str], frozenset[Action]] = {}
        self._match: dict[tuple[System, str, Action, str], Rule] = {}
        for rule in rules:
            scope = (rule.source, rule.entity)
            self._actions[scope] = self._actions.get(scope, frozenset()) | rule.actions
            for action in rule.actions:
                for order_target in ORDER_TARGETS if rule.order_target is None else (rule.order_target,):
                    self._match.setdefault((rule.source, rule.entity, action, order_target), rule)
        # for each entity a document may name as a dependency, the rules that send it
        senders: dict[str, list[str]] = {}
        for rule in rules:
            for dependency in rule.dependencies:
                if dependency.rule not in senders.setdefault(dependency.entity, []):
                    senders[dependency.entity].append(dependency.rule)
        self.dependency_senders: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in senders.items()}
        # ... and by where they send it (system, entity): (the dependency's entity, the sending rule)
        by_target: dict[tuple[System, str], list[tuple[str, Rule]]] = {}
        for entity, rule_ids in self.dependency_senders.items():
            for rule_id in rule_ids:
                sender = self._by_id[rule_id]
                write = sender.write_target()
                by_target.setdefault((write.system, write.entity), []).append((entity, sender))
        self.dependency_senders_to: dict[tuple[System, str], tuple[tuple[str, Rule], ...]] = {
            k: tuple(v) for k, v in by_target.items()
        }
        self.derived: dict[str, tuple[Rule, ...]] = {
            order_target: tuple(
                rule for rule in rules if rule.effect is Effect.DERIVED and rule.order_target in (None, order_target)
            )
            for order_target in ORDER_TARGETS
        }

    def __repr__(self) -> str:
        return f"RuleBook({len(self.rules)} rules: {self.rules[0].id} … {self.rules[-1].id})"

    def by_id(self, rule_id: str) -> Rule:
        return self._by_id[rule_id]

    def actions_for(self, source: System, entity: str) -> frozenset[Action]:
        """Every action some rule takes on this entity, whatever the tenant's order target."""
        return self._actions.get((source, entity), frozenset())

    def accepts(self, source: System, entity: str, action: Action) -> bool:
        """Whether ``action`` means something on this entity: a lifecycle action, one a rule takes, or
        one that feeds the aggregates."""
        return (
            action in LIFECYCLE_ACTIONS
            or action in self.actions_for(source, entity)
            or action in DERIVED_TRIGGERS.get((source, entity), ())
        )

    def match(self, source: System, entity: str, action: Action, order_target: str) -> Rule | None:
        return self._match.get((source, entity, action, order_target))


def load_rules(table: list[dict[str, Any]] | None = None) -> RuleBook:
    """Validate the rule table; raise RuleTableError naming the first faulty rule."""
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    for index, row in enumerate(RULE_TABLE if table is None else table):
        name = row.get("id", f"#{index + 1}")
        try:
            rule = Rule.model_validate(row)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(rule)"
            raise RuleTableError(f"rule {name}: {where}: {first['msg']}") from None
        if rule.id in seen:
            raise RuleTableError(f"rule {rule.id}: defined twice (rows {seen[rule.id] + 1} and {index + 1})")
        seen[rule.id] = index
        for other in rules:
            overlap = rule.actions & other.actions
            same_scope = (
                other.source == rule.source
                and other.entity == rule.entity
                and (other.order_target is None or rule.order_target is None or other.order_target == rule.order_target)
            )
            if overlap and same_scope:
                raise RuleTableError(
                    f"rule {rule.id}: action(s) {sorted(a.value for a in overlap)} on {rule.source.value} "
                    f"{rule.entity} already belong to rule {other.id}"
                )
        rules.append(rule)
    by_id = {rule.id: rule for rule in rules}
    for rule in rules:
        for dependency in rule.dependencies:
            sender = by_id.get(dependency.rule)
            sends = sender.writes if sender is not None else None
            if sends is None or sends.system is not rule.target or sends.entity != dependency.entity:
                raise RuleTableError(
                    f"rule {rule.id}: dependency {dependency.entity} is sent by rule {dependency.rule}, which must "
                    f"write {dependency.entity} to {rule.target.value if rule.target else '?'}"
                )
    return RuleBook(tuple(rules))
