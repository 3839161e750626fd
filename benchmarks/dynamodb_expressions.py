"""DynamoDB's condition and update expressions over items in DynamoDB JSON, for the benchmarks' fakes.

What `SnapshotLedger` (fake_aws.py) needs to apply the pusher's writes the way DynamoDB does: conditions
(comparisons, AND/OR/NOT, parentheses, `attribute_exists`, `attribute_not_exists`, `begins_with`,
`size`) and updates (SET with `+`/`-`, `if_not_exists` and `list_append`; ADD of a number; REMOVE of an
attribute or a list element). Every SET right-hand side reads the item as it was before the update, as
in DynamoDB. Anything else raises NotImplementedError, so the fake never answers what it cannot judge.
Parsed expressions are cached by their text: the pusher sends the same few expressions again and again.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from functools import lru_cache
from typing import Any

Item = dict[str, Any]  # attribute name -> typed value ({"S": ...}, {"N": ...}, {"L": [...]}, ...)
Step = str | int  # a map key or a list index
Path = tuple[Step, ...]

_TOKEN = re.compile(r"\s*(<>|<=|>=|[=<>()\[\],.+-]|#?[A-Za-z_][A-Za-z0-9_]*|:[A-Za-z0-9_]+|\d+)")
_CLAUSES = {"SET", "REMOVE", "ADD", "DELETE"}


class _Tokens:
    def __init__(self, text: str) -> None:
        self.items: list[str] = []
        position = 0
        while position < len(text.rstrip()):
            match = _TOKEN.match(text, position)
            if match is None:
                raise NotImplementedError(f"cannot read expression {text!r} at {position}")
            self.items.append(match.group(1))
            position = match.end()
        self.position = 0
        self.text = text

    def peek(self) -> str | None:
        return self.items[self.position] if self.position < len(self.items) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token.upper() != expected):
            raise NotImplementedError(f"expected {expected or 'more'} in {self.text!r}, found {token!r}")
        self.position += 1
        return token

    def at(self, *words: str) -> bool:
        token = self.peek()
        return token is not None and token.upper() in words


class Names:
    """A request's `ExpressionAttributeNames` and `ExpressionAttributeValues`."""

    def __init__(self, call: dict[str, Any]) -> None:
        self.names: dict[str, str] = call.get("ExpressionAttributeNames", {})
        self.values: dict[str, Any] = call.get("ExpressionAttributeValues", {})


# An operand: the item and the request's names/values -> a typed value, or None when absent.
Operand = Callable[[Item, Names], Any]
Condition = Callable[[Item, Names], bool]


def _path(tokens: _Tokens) -> Callable[[Names], Path]:
    raw: list[str | int] = [tokens.take()]
    while tokens.at("[", "."):
        if tokens.take() == "[":
            raw.append(int(tokens.take()))
            tokens.take("]")
        else:
            raw.append(tokens.take())

    def resolve(names: Names) -> Path:
        steps: list[Step] = []
        for step in raw:
            if isinstance(step, str) and step.startswith("#"):
                steps.append(names.names[step])
            elif isinstance(step, str) and not step[0].isalpha() and step[0] != "_":
                raise NotImplementedError(f"not an attribute path: {step!r}")
            else:
                steps.append(step)
        return tuple(steps)

    return resolve


def get(item: Item, path: Path) -> Any:
    """The typed value at `path`, or None."""
    value: Any = {"M": item}
    for step in path:
        if isinstance(step, int):
            listed = value.get("L") if isinstance(value, dict) else None
            value = listed[step] if listed is not None and step < len(listed) else None
        else:
            mapped = value.get("M") if isinstance(value, dict) else None
            value = mapped.get(step) if mapped is not None else None
        if value is None:
            return None
    return value


def _with(item: Item, path: Path, value: Any) -> Item:
    """A copy of `item` with `path` set to `value` (None: removed); the containers on the path are copied,
    nothing else, so a reader holding the old item never sees it change."""

    def put(container: Any, steps: Path) -> Any:
        step, rest = steps[0], steps[1:]
        if isinstance(step, int):
            listed = list(container["L"])
            if step >= len(listed):
                if value is None:
                    return container
                listed.append(value)  # DynamoDB appends past the end
                return {"L": listed}
            if rest:
                listed[step] = put(listed[step], rest)
            elif value is None:
                del listed[step]
            else:
                listed[step] = value
            return {"L": listed}
        mapped = dict(container["M"])
        if rest:
            if step not in mapped:
                raise NotImplementedError(f"the path {path} does not exist")
            mapped[step] = put(mapped[step], rest)
        elif value is None:
            mapped.pop(step, None)
        else:
            mapped[step] = value
        return {"M": mapped}

    result: Item = put({"M": item}, path)["M"]
    return result


def _operand(tokens: _Tokens) -> Operand:
    if tokens.at("SIZE"):
        tokens.take()
        tokens.take("(")
        path = _path(tokens)
        tokens.take(")")
        return lambda item, names: _size(get(item, path(names)))
    token = tokens.peek()
    if token is not None and token.startswith(":"):
        tokens.take()
        return lambda _item, names: names.values[token]
    path = _path(tokens)
    return lambda item, names: get(item, path(names))


def _size(value: Any) -> Any:
    if value is None:
        return None
    (kind, content), *_ = value.items()
    if kind == "B":
        import base64  # noqa: PLC0415

        return {"N": str(len(base64.b64decode(content)))}
    if kind == "S":
        return {"N": str(len(content.encode()))}
    if kind in {"L", "M", "SS", "NS", "BS"}:
        return {"N": str(len(content))}
    raise NotImplementedError(f"size() of a {kind}")


def _plain(value: Any) -> Any:
    """A typed value as something Python compares the way DynamoDB does (numbers by value)."""
    (kind, content), *_ = value.items()
    if kind == "N":
        return ("N", Decimal(content))
    if kind == "M":
        return ("M", {key: _plain(inner) for key, inner in content.items()})
    if kind == "L":
        return ("L", [_plain(inner) for inner in content])
    if kind in {"SS", "BS"}:
        return (kind, frozenset(content))
    if kind == "NS":
        return (kind, frozenset(Decimal(number) for number in content))
    return (kind, content)


def same(left: Any, right: Any) -> bool:
    """DynamoDB's `=` on two typed values (False when either is absent)."""
    return left is not None and right is not None and _plain(left) == _plain(right)


_ORDER = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _compare(operator: str, left: Any, right: Any) -> bool:
    if operator == "=":
        return same(left, right)
    if operator == "<>":
        return left is not None and right is not None and not same(left, right)
    if left is None or right is None:
        return False
    (kind, first), (other, second) = _plain(left), _plain(right)
    if kind != other:
        return False
    if kind not in {"N", "S", "B"}:
        raise NotImplementedError(f"{operator} on a {kind}")
    result: bool = _ORDER[operator](first, second)
    return result


def _condition(tokens: _Tokens) -> Condition:
    terms = [_conjunction(tokens)]
    while tokens.at("OR"):
        tokens.take()
        terms.append(_conjunction(tokens))
    if len(terms) == 1:
        return terms[0]
    return lambda item, names: any(term(item, names) for term in terms)


def _conjunction(tokens: _Tokens) -> Condition:
    terms = [_negation(tokens)]
    while tokens.at("AND"):
        tokens.take()
        terms.append(_negation(tokens))
    if len(terms) == 1:
        return terms[0]
    return lambda item, names: all(term(item, names) for term in terms)


def _negation(tokens: _Tokens) -> Condition:
    if tokens.at("NOT"):
        tokens.take()
        inner = _negation(tokens)
        return lambda item, names: not inner(item, names)
    if tokens.at("("):
        tokens.take()
        inner = _condition(tokens)
        tokens.take(")")
        return inner
    if tokens.at("ATTRIBUTE_EXISTS", "ATTRIBUTE_NOT_EXISTS"):
        exists = tokens.take().upper() == "ATTRIBUTE_EXISTS"
        tokens.take("(")
        path = _path(tokens)
        tokens.take(")")
        return lambda item, names: (get(item, path(names)) is not None) == exists
    if tokens.at("BEGINS_WITH"):
        tokens.take()
        tokens.take("(")
        whole = _operand(tokens)
        tokens.take(",")
        prefix = _operand(tokens)
        tokens.take(")")

        def begins(item: Item, names: Names) -> bool:
            value, start = whole(item, names), prefix(item, names)
            if value is None or start is None or set(value) != set(start) or set(value) - {"S", "B"}:
                return False
            return bool(next(iter(value.values())).startswith(next(iter(start.values()))))

        return begins
    left = _operand(tokens)
    operator = tokens.take()
    if operator not in {"=", "<>", "<", "<=", ">", ">="}:
        raise NotImplementedError(f"the operator {operator!r} in {tokens.text!r}")
    right = _operand(tokens)
    return lambda item, names: _compare(operator, left(item, names), right(item, names))


@lru_cache(maxsize=256)
def condition(text: str) -> Condition:
    tokens = _Tokens(text)
    parsed = _condition(tokens)
    if tokens.peek() is not None:
        raise NotImplementedError(f"cannot read the rest of {text!r} from {tokens.peek()!r}")
    return parsed


def _number(value: Any) -> Decimal:
    if value is None or "N" not in value:
        raise NotImplementedError(f"arithmetic on {value!r}")
    return Decimal(value["N"])


def number(amount: Decimal) -> dict[str, str]:
    text = format(amount.normalize(), "f")
    return {"N": text}


def _value(tokens: _Tokens) -> Operand:
    first = _term(tokens)
    if not tokens.at("+", "-"):
        return first
    sign = 1 if tokens.take() == "+" else -1
    second = _term(tokens)
    return lambda item, names: number(_number(first(item, names)) + sign * _number(second(item, names)))


def _term(tokens: _Tokens) -> Operand:
    if tokens.at("IF_NOT_EXISTS"):
        tokens.take()
        tokens.take("(")
        path = _path(tokens)
        tokens.take(",")
        fallback = _value(tokens)
        tokens.take(")")

        def if_not_exists(item: Item, names: Names) -> Any:
            found = get(item, path(names))
            return found if found is not None else fallback(item, names)

        return if_not_exists
    if tokens.at("LIST_APPEND"):
        tokens.take()
        tokens.take("(")
        head = _value(tokens)
        tokens.take(",")
        tail = _value(tokens)
        tokens.take(")")

        def list_append(item: Item, names: Names) -> Any:
            first, second = head(item, names), tail(item, names)
            if first is None or second is None or "L" not in first or "L" not in second:
                raise NotImplementedError(f"list_append of {first!r} and {second!r}")
            return {"L": [*first["L"], *second["L"]]}

        return list_append
    return _operand(tokens)


def _path_order(path: Path) -> tuple[tuple[int, Step], ...]:
    return tuple((0, step) if isinstance(step, int) else (1, step) for step in path)


# An update: the item as read and the request's names -> (the new item, the top-level names it changed).
Update = Callable[[Item, Names], tuple[Item, set[str]]]


_Actions = tuple[
    list[tuple[Callable[[Names], Path], Operand]],  # SET path = value
    list[tuple[Callable[[Names], Path], Operand]],  # ADD path number
    list[Callable[[Names], Path]],  # REMOVE path
]


def _actions(text: str) -> _Actions:
    tokens = _Tokens(text)
    sets: list[tuple[Callable[[Names], Path], Operand]] = []
    adds: list[tuple[Callable[[Names], Path], Operand]] = []
    removes: list[Callable[[Names], Path]] = []
    while tokens.peek() is not None:
        clause = tokens.take().upper()
        if clause not in _CLAUSES - {"DELETE"}:
            raise NotImplementedError(f"the clause {clause!r} in {text!r}")
        while True:
            path = _path(tokens)
            if clause == "SET":
                tokens.take("=")
                sets.append((path, _value(tokens)))
            elif clause == "ADD":
                adds.append((path, _operand(tokens)))
            else:
                removes.append(path)
            if not tokens.at(","):
                break
            tokens.take()
    return sets, adds, removes


@lru_cache(maxsize=256)
def update(text: str) -> Update:
    sets, adds, removes = _actions(text)

    def apply(item: Item, names: Names) -> tuple[Item, set[str]]:
        # Every operand reads the item as it was: compute all, then write.
        changes: list[tuple[Path, Any]] = [(path(names), value(item, names)) for path, value in sets]
        for path, operand in adds:
            where, amount = path(names), operand(item, names)
            if amount is None or "N" not in amount:
                raise NotImplementedError(f"ADD of {amount!r} (only numbers here)")
            before = get(item, where)
            changes.append((where, number((_number(before) if before else Decimal(0)) + _number(amount))))
        # REMOVE of list elements: highest index first, so the indexes named stay right.
        removed = sorted((path(names) for path in removes), key=_path_order)
        new = item
        for where, value in changes:
            if value is None:
                raise NotImplementedError(f"SET {where} to an absent value")
            new = _with(new, where, value)
        for where in reversed(removed):
            new = _with(new, where, None)
        touched = {str(where[0]) for where, _value in changes}
        return new, touched

    return apply
