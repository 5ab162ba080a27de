"""Business rules are expressions, not SQL text.

A rule such as the lookalike audience's ``value >= 4 AND genre_horror = 1`` is settable
from the Dagster launchpad, so it is never pasted into SQL. It is parsed with SQLGlot
into ONE boolean expression; only comparisons, boolean logic, arithmetic, a few scalar
functions and the known event columns may appear (no statement, subquery, table
function or file access); its literals become query parameters; and the SQL that runs is
generated from the checked tree.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

# What a rule may contain: nothing that reads, writes or calls out
ALLOWED_NODES = (
    exp.Column, exp.Identifier, exp.Literal, exp.Boolean, exp.Null, exp.Paren,
    exp.And, exp.Or, exp.Not, exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE,
    exp.Is, exp.In, exp.Between, exp.Like, exp.ILike, exp.Add, exp.Sub, exp.Mul,
    exp.Div, exp.Mod, exp.Neg, exp.Lower, exp.Upper, exp.Coalesce, exp.Abs, exp.Length,
    exp.Cast, exp.DataType, exp.Tuple,
)


@dataclass(frozen=True)
class SafePredicate:
    """A checked rule: ``sql`` with ``$rule_<n>`` placeholders, and their ``parameters``."""

    text: str
    sql: str
    parameters: dict[str, object]
    columns: frozenset[str]


def parse_rule(text: str, columns: set[str] | list[str], what: str = "the rule") -> SafePredicate:
    """Parse ``text`` into a :class:`SafePredicate` over ``columns``, or refuse it with a
    ValueError that says what is not allowed and which columns may be used."""
    known = {c.lower() for c in columns}
    usage = (f"{what} must be one boolean expression over the columns {sorted(known)} "
             "(comparisons, AND/OR/NOT, IN, BETWEEN, LIKE, arithmetic, lower/upper/"
             "coalesce/abs/length, CAST)")
    try:
        tree = sqlglot.condition(text, dialect="duckdb")
    except ParseError as error:
        raise ValueError(f"{what} {text!r} is not a single expression; {usage}") from error
    for node in tree.walk():
        if not isinstance(node, ALLOWED_NODES):
            name = node.sql(dialect="duckdb")[:60] if node.sql() else type(node).__name__
            raise ValueError(
                f"{what} {text!r} uses {type(node).__name__.lower()} ({name}), which a rule "
                f"may not; {usage}"
            )
    used = {c.name.lower() for c in tree.find_all(exp.Column)}
    if unknown := used - known:
        raise ValueError(f"{what} {text!r} names unknown columns {sorted(unknown)}; {usage}")
    parameters: dict[str, object] = {}

    def to_parameter(node: exp.Expression) -> exp.Expression:
        if not isinstance(node, exp.Literal) or isinstance(node.parent, exp.DataType):
            return node
        name = f"rule_{len(parameters)}"
        parameters[name] = node.this if node.is_string else _number(node.this)
        return exp.Placeholder(this=name)

    checked = tree.transform(to_parameter)
    return SafePredicate(text, checked.sql(dialect="duckdb"), parameters, frozenset(used))


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)
