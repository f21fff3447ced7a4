"""``lienthong matrix --markdown``: the rule table rendered as docs/matrix.md (bilingual)."""

from __future__ import annotations

from streams.core.rules import Effect, Rule, RuleBook

HEADER = """# The sync matrix as the processor runs it

Generated from `streams/core/rule_table.py` (validated by `streams/core/rules.py`) by
`lienthong matrix --markdown > docs/matrix.md`; a test fails when this file and the rule table
differ. Each row is one rule as data; `decide()` in `streams/core/decide.py` is its one
interpreter. Rule IDs are the product's interface: every command names the rule that sent it, and
every audit record the rules it involved. The labels are the original table's (Tiếng Việt) and their
English reading; the wire format is `docs/contract.md`.
"""

CROSS_CUTTING_RULES = (
    (
        "X-1 echo",
        "`decide()`: an event with `origin = sync` produces no command; the audit names X-1 (note `echo`).",
    ),
    (
        "X-2 no-op",
        "a command whose fields equal what was last written to that record (table `written`), or a change "
        "that touched none of the fields a rule writes, sends nothing; the audit names X-2 (note `unchanged`).",
    ),
    (
        "X-3 link",
        "`_state_updates` and table `links`: ids by business code and by counterpart id; acct `crm_id`; "
        "connector results.",
    ),
    (
        "X-4 dependencies",
        "a rule's `dependencies` (the `fields` column says which): the records the document names that the "
        "target has not linked yet are sent first, by the rule named; the document's `depends_on` names them. "
        "A record the processor has not seen yet goes by its code only; its fields follow by the same rule "
        "when its own change arrives (audit note `dependency_completed`).",
    ),
    (
        "X-5 order",
        "one agent (concurrency 1) per partition, commands keyed by target record: one record's commands stay "
        "in order.",
    ),
    (
        "X-6 bad input",
        "`decode_change_event` raises `BadInput`; the agent dead-letters to `dlq.cdc` with the reason in headers.",
    ),
)
CROSS_CUTTING = "\n## Cross-cutting rules\n\n| rule | where in the code |\n|---|---|\n" + "".join(
    f"| {rule} | {text} |\n" for rule, text in CROSS_CUTTING_RULES
)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _row(rule: Rule) -> str:
    actions = ", ".join(sorted(a.value for a in rule.actions)) or "(aggregates)"
    writes = f"{rule.target.value} {rule.target_entity} {rule.op.value}" if rule.target and rule.op else "—"
    if rule.read_only:
        writes += " (read-only)"
    fields = "—"
    if rule.effect is Effect.DERIVED:
        fields = "derived: " + ", ".join(rule.derives)
        for extra in rule.derives_also:
            fields += f"; with {extra.when.describe()} also " + ", ".join(extra.fields)
    elif rule.effect is not Effect.NONE:
        fields = "all mapped" if rule.only_fields is None else ", ".join(rule.only_fields) or "—"
        if rule.set_fields:
            fields += "; " + "; ".join(
                f"{action.value}: " + ", ".join(f"{k} := {v}" for k, v in values.items())
                for action, values in sorted(rule.set_fields.items())
            )
        if rule.rename:
            fields += "; " + ", ".join(f"{a} → {b}" for a, b in rule.rename.items())
        if rule.requires_link:
            fields += "; linked records only"
        if rule.dependencies:
            fields += "; X-4 first: " + ", ".join(
                f"{dependency.entity} by `{dependency.code_field}` ({dependency.rule})"
                for dependency in rule.dependencies
            )
    cells = [
        rule.id,
        rule.source.value,
        rule.entity,
        actions,
        rule.order_target or "",
        rule.when.describe() if rule.when else "",
        rule.effect.value,
        writes,
        fields,
        rule.label_vi,
        rule.label_en,
    ]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def matrix_markdown(book: RuleBook) -> str:
    return HEADER + "\n".join(_row(rule) for rule in book.rules) + "\n" + CROSS_CUTTING
