"""Canonical contract fields <-> a system's own field names and values, as data.

A ``RecordMap`` is a table of ``FieldMap`` rows, one per field: the contract's name, the system's
name, how the value travels (``kind``), the system's label for each canonical value (``values``)
and how certain the system's name is (``source``: ``DOC``, ``OBS``, ``CODE``, ``INF`` as in the
reference ``amis-apis.md``, or ``EXT`` for a field the public API does not have, which only the
sandbox keeps as a labelled extension; ``RecordMap.documented`` is the table without them).
``to_wire`` and ``from_wire`` read the same table both ways; the tables themselves are
``amis/crm_mapping.py`` and ``amis/acct_mapping.py``, each with the reference's field names per
request kind (``REFERENCE_FIELDS``, read with ``in_reference``).

* ``to_wire`` writes only the fields of the table (a real client sends what the API knows) unless
  the map is ``passthrough`` (the sandbox's extension resources keep every field); a canonical
  value without a label raises ``MappingError`` (the command cannot be said in that system).
* ``from_wire`` reads only the fields of the table; a system value without a canonical name is
  kept as it is (a label added to the system later is visible instead of lost).
* Money is a decimal string in the contract and a JSON number on the wire; ids are text in the
  contract and may be numbers on the wire (CRM).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from fnmatch import fnmatchcase
from typing import Any, Literal

Kind = Literal["raw", "text", "id", "money", "number", "percent", "lines"]
Source = Literal["DOC", "OBS", "CODE", "INF", "EXT"]


class MappingError(ValueError):
    """A canonical value that the system has no way to say (an unknown status, a malformed amount)."""


def decimal_text(value: Any) -> str:
    """A number or decimal string as the contract's canonical decimal string: ``200000``, ``12.5``."""
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise MappingError(f"{value!r} is not a decimal number") from None
    if not number.is_finite():
        raise MappingError(f"{value!r} is not a finite number")
    if number == number.to_integral_value():
        return str(int(number))
    return format(number.normalize(), "f")


def wire_number(value: Any) -> int | float:
    """A canonical amount or quantity as the JSON number the APIs take."""
    if isinstance(value, bool):
        raise MappingError(f"{value!r} is not a number")
    if isinstance(value, int):
        return value
    number = Decimal(decimal_text(value))
    return int(number) if number == number.to_integral_value() else float(number)


def in_reference(name: str, names: frozenset[str]) -> bool:
    """Whether ``name`` is one of a request kind's documented field names (``REFERENCE_FIELDS`` of
    ``amis/crm_mapping.py``, ``amis/acct_mapping.py``): listed, matched by a listed pattern as the
    reference writes it (``billing_*``, ``total_*_oc``), or the ``_oc`` twin of a listed field (both
    references say money fields come in pairs: ``*_oc`` in the original currency, the plain one in VND)."""
    if name in names or any("*" in pattern and fnmatchcase(name, pattern) for pattern in names):
        return True
    return name.endswith("_oc") and in_reference(name.removesuffix("_oc"), names)


@dataclass(frozen=True)
class FieldMap:
    canonical: str
    wire: str
    kind: Kind = "raw"
    values: Mapping[Any, Any] | None = None  # canonical value -> the system's value (a label, a code, a bool)
    write_values: Mapping[Any, Any] | None = None  # canonical values written one way only (no reading back)
    lines: RecordMap | None = None  # kind "lines": the map of each line
    source: Source = "DOC"
    note: str = ""

    def out(self, value: Any, where: str) -> Any:
        if value is None:
            return None
        if self.values is not None:
            if value in self.values:
                return self.values[value]
            if self.write_values and value in self.write_values:
                return self.write_values[value]
            known = ", ".join(repr(v) for v in [*self.values, *(self.write_values or {})])
            raise MappingError(f"{where}: {value!r} has no value in the system (known: {known})")
        if self.kind == "money" or self.kind == "number":
            if self.kind == "number" and isinstance(value, (int, float)) and not isinstance(value, bool):
                return value
            try:
                return wire_number(value)
            except MappingError as exc:
                raise MappingError(f"{where}: {exc}") from None
        if self.kind == "id":  # a numeric id on the wire (CRM); anything else stays text
            text = str(value)
            return int(text) if text.isdigit() else text
        if self.kind == "percent":
            return f"{decimal_text(value)}%"
        if self.kind == "text":
            return str(value)
        if self.kind == "lines":
            if not isinstance(value, list):
                raise MappingError(f"{where}: lines must be a list, not {type(value).__name__}")
            lines = self._line_map()
            return [
                lines.to_wire(line, f"{where}[{n}]") if isinstance(line, dict) else line for n, line in enumerate(value)
            ]
        return value

    def _line_map(self) -> RecordMap:
        if self.lines is None:
            raise TypeError(f"field {self.canonical} is of kind 'lines' without a line map")
        return self.lines

    def back(self, value: Any) -> Any:
        if value is None:
            return None
        if self.values is not None:
            for canonical, wire in self.values.items():
                if wire == value and type(wire) is type(value):
                    return canonical
            return value  # a value the table does not know is kept as the system said it
        if self.kind == "money":
            try:
                return decimal_text(value)
            except MappingError:
                return value
        if self.kind == "id" or self.kind == "text":
            return str(value)
        if self.kind == "percent":
            text = str(value).strip().removesuffix("%").strip()
            try:
                return decimal_text(text)
            except MappingError:
                return value
        if self.kind == "lines":
            lines = self._line_map()
            return [lines.from_wire(line) if isinstance(line, dict) else line for line in value or []]
        return value


@dataclass(frozen=True)
class RecordMap:
    """One record type of a system: its fields, and what is always sent."""

    fields: tuple[FieldMap, ...]
    aliases: tuple[FieldMap, ...] = ()  # other canonical names written to a field of ``fields``; read back as that one
    constants: Mapping[str, Any] = field(default_factory=dict)  # wire fields every write sends (e.g. is_customer)
    passthrough: bool = False  # extension records: fields outside the table travel under their canonical names
    # The system's own custom fields (CRM's ``custom_field<N>``, DOC), as a pattern: they travel both ways under
    # their own names, so that a company's field mappings (tenant settings) can read and write them.
    custom: str | None = None

    def __post_init__(self) -> None:
        wires = [f.wire for f in self.fields]
        canonicals = [f.canonical for f in self.fields]
        for names, what in ((wires, "system"), (canonicals, "canonical")):
            doubles = sorted({n for n in names if names.count(n) > 1})
            if doubles:
                raise ValueError(f"a record map names the {what} field(s) {doubles} twice")
        for alias in self.aliases:
            if alias.wire not in wires:
                raise ValueError(f"alias {alias.canonical} writes {alias.wire}, which no field of the map reads")

    def field(self, canonical: str) -> FieldMap | None:
        return next((f for f in self.fields if f.canonical == canonical), None)

    def to_wire(self, record: Mapping[str, Any], where: str = "record") -> dict[str, Any]:
        out: dict[str, Any] = {}
        by_canonical = {f.canonical: f for f in self.fields}
        aliases = {a.canonical: a for a in self.aliases}
        for name, value in record.items():
            mapped = by_canonical.get(name) or aliases.get(name)
            if mapped is not None:
                out[mapped.wire] = mapped.out(value, f"{where}.{name}")
            elif self.passthrough or self.is_custom(name):
                out[name] = value
        for name, value in self.constants.items():
            out.setdefault(name, value)
        return out

    def from_wire(self, record: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        known_wire = {f.wire for f in self.fields} | set(self.constants)
        for mapped in self.fields:
            if mapped.wire in record:
                out[mapped.canonical] = mapped.back(record[mapped.wire])
        if self.passthrough:
            for name, value in record.items():
                if name not in known_wire and name not in out:
                    out[name] = value
        elif self.custom is not None:
            out.update((name, value) for name, value in record.items() if self.is_custom(name))
        return out

    def is_custom(self, name: str) -> bool:
        """Whether ``name`` is one of the system's custom fields (``custom``)."""
        return self.custom is not None and fnmatchcase(name, self.custom)

    def canonical_names(self) -> frozenset[str]:
        """The contract's names of the fields the map reads and writes (its lines' fields excluded)."""
        return frozenset(f.canonical for f in self.fields) | {a.canonical for a in self.aliases}

    def unmapped(self, record: Mapping[str, Any]) -> list[str]:
        """Canonical fields of ``record`` that ``to_wire`` leaves out."""
        if self.passthrough:
            return []
        return sorted(name for name in set(record) - self.canonical_names() if not self.is_custom(name))

    def normalize(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """What the system will give back for ``record``: the fields it keeps, in their canonical form."""
        return self.from_wire(self.to_wire(record))

    def documented(self) -> RecordMap:
        """The map without its ``EXT`` fields (also in its lines' maps) and without passthrough: what a
        writer sends to a real tenant, whose API has no extension (``LIENTHONG_CONNECTOR_EXTENSIONS`` off)."""
        fields = tuple(
            replace(f, lines=f.lines.documented()) if f.lines is not None else f
            for f in self.fields
            if f.source != "EXT"
        )
        kept = {f.wire for f in fields}
        aliases = tuple(a for a in self.aliases if a.source != "EXT" and a.wire in kept)
        return RecordMap(fields=fields, aliases=aliases, constants=self.constants, custom=self.custom)
